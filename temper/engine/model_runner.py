"""Runs the model over one scheduled batch on the paged KV cache and returns the logits to sample from."""
from __future__ import annotations

import logging

import torch

from temper.engine.attention import BACKENDS, PagedKVCache, TritonPagedContext, cpu_kernel_available, triton_available
from temper.engine.attention.torch_paged import StepLayout
from temper.engine.attention.triton_paged import padded_tables
from temper.engine.config import EngineConfig
from temper.engine.scheduler import ScheduledBatch
from temper.models import CausalLM
from temper.models.layers import fuse_projections

log = logging.getLogger(__name__)


def available_memory(device: torch.device) -> int:
    """Bytes the KV pool may take a share of: free GPU memory, or the OS's available RAM."""
    if device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
        return free
    with open("/proc/meminfo") as f:
        for line in f:
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    raise RuntimeError("cannot read MemAvailable from /proc/meminfo; set kv_cache_memory")


class ModelRunner:
    def __init__(self, model: CausalLM, config: EngineConfig, max_model_len: int):
        self.model = model
        self.config = config
        if config.fuse_projections:
            fused = fuse_projections(model)  # q/k/v and gate/up as one matmul each: fewer, larger GEMMs
            log.debug("fused %d projection groups", fused)
        self.device = model.device
        per_block = PagedKVCache.bytes_per_block(model.config, config.block_size, model.dtype)
        budget = config.kv_cache_memory or int(available_memory(self.device) * config.kv_cache_fraction)
        # no use for more blocks than every sequence at full length needs
        most = config.max_num_seqs * -(-max_model_len // config.block_size)
        self.num_blocks = min(budget // per_block, most)
        if self.num_blocks < -(-max_model_len // config.block_size):
            raise ValueError(f"the KV cache budget ({budget / 2**20:.0f} MiB) holds {self.num_blocks} blocks of "
                             f"{config.block_size} tokens, fewer than one {max_model_len}-token sequence needs; "
                             "raise kv_cache_memory or lower max_model_len")
        self.backend = self.choose_backend(config.attention_backend, self.device, model.config.head_dim, model.dtype)
        self.context_cls = BACKENDS[self.backend]
        self.graphs: dict[int, torch.cuda.CUDAGraph] = {}
        self.graph_replays = 0  # decode steps that ran as a graph replay
        self.graph_sizes: list[int] = []  # captured batch sizes, ascending
        use_graphs = config.cuda_graphs and self.device.type == "cuda" and self.backend == "triton"
        # a captured batch pads its rows to a captured size; padding rows write their keys to one spare block
        self.cache = PagedKVCache.allocate(model.config, self.num_blocks + use_graphs, config.block_size,
                                           self.device, model.dtype)
        self.windows = model.windows
        log.info("KV cache: %d blocks of %d tokens (%.0f MiB), attention backend %s", self.num_blocks,
                 config.block_size, self.num_blocks * per_block / 2**20, self.backend)
        if use_graphs:
            self.capture_graphs(max_model_len)
        self.cpu_decoder = None  # small decode-only steps in one C call (cpu_decode.py)
        self.cpu_decode_steps = 0
        if self.backend == "cpu" and config.cpu_decode_max_batch > 0:
            from temper.engine.cpu_decode import CpuDecoder, unsupported

            why = unsupported(model)
            if why is None:
                self.cpu_decoder = CpuDecoder(model, self.cache, config.block_size)
            else:
                log.info("decode steps stay on the PyTorch path: %s", why)

    @staticmethod
    def choose_backend(name: str, device: torch.device, head_dim: int, dtype: torch.dtype = torch.float32) -> str:
        """`auto`: the Triton kernel on CUDA where Triton is installed (head_dim a power of two); the C kernel on
        the CPU for an fp32 KV cache where it builds; else torch."""
        pow2 = head_dim >= 16 and head_dim & (head_dim - 1) == 0
        if name == "auto":
            if device.type == "cuda":
                return "triton" if triton_available() and pow2 else "torch"
            if device.type == "cpu" and dtype == torch.float32:
                ok, why = cpu_kernel_available()
                if ok:
                    return "cpu"
                log.warning("CPU attention kernel unavailable, using the slower torch path: %s", why)
            return "torch"
        if name == "cpu":
            if device.type != "cpu" or dtype != torch.float32:
                raise ValueError(f"attention_backend 'cpu' needs an fp32 model on the CPU, got {dtype} on {device}")
            ok, why = cpu_kernel_available()
            if not ok:
                raise ValueError(f"attention_backend 'cpu': {why}")
        if name == "triton":
            if not triton_available():
                raise ValueError("attention_backend 'triton' needs the triton package (pip install triton)")
            if not pow2:
                raise ValueError(f"attention_backend 'triton' needs a power-of-two head_dim >= 16, got {head_dim}")
        return name

    # ------------------------------------------------------------------ CUDA graphs for decode steps
    @torch.inference_mode()
    def capture_graphs(self, max_model_len: int) -> None:
        """Capture the model's forward for decode batches of 1, 2, 4, 8, 16, 32, ... sequences (vLLM's and
        nano-vllm's scheme): a decode step of a small model is hundreds of short kernels, and replaying a
        graph launches them all at once. Inputs live in fixed tensors that each step refills."""
        most = min(self.config.max_num_seqs, self.config.max_graph_batch)
        sizes = sorted({s for s in (1, 2, 4, 8, *range(16, most + 1, 16)) if s <= most} | {most})
        width = -(-max_model_len // self.config.block_size)
        dev, hidden = self.device, self.model.config.hidden_size
        spare = self.num_blocks * self.config.block_size  # first slot of the spare block
        self._g_ids = torch.zeros(1, most, dtype=torch.long, device=dev)
        self._g_pos = torch.zeros(1, most, dtype=torch.long, device=dev)
        self._g_slots = torch.full((most,), spare, dtype=torch.long, device=dev)
        # every tensor a graph reads must outlive it: a graph keeps raw addresses, not references
        self._g_rows = torch.arange(most, dtype=torch.int32, device=dev)
        self._g_tables = torch.zeros(most, width, dtype=torch.int32, device=dev)
        self._g_ctx = torch.zeros(most, dtype=torch.int32, device=dev)
        self._g_out = torch.zeros(1, most, hidden, dtype=self.model.dtype, device=dev)
        self._g_spare = spare
        pool = None
        for size in reversed(sizes):  # largest first: the smaller graphs reuse its memory pool
            ctx = TritonPagedContext.static(self.cache, self._g_slots[:size], self._g_rows[:size],
                                            self._g_tables[:size], self._g_ctx[:size])
            ids, pos = self._g_ids[:, :size], self._g_pos[:, :size]
            self._g_out[:, :size] = self.model.hidden_states(ids, pos, ctx=ctx)  # warm-up: kernels compiled, handles made
            torch.cuda.synchronize(dev)
            graph = torch.cuda.CUDAGraph()
            with torch.cuda.graph(graph, pool=pool):
                self._g_out[:, :size] = self.model.hidden_states(ids, pos, ctx=ctx)
            pool = graph.pool() if pool is None else pool
            self.graphs[size] = graph
        self.graph_sizes = sizes
        torch.cuda.synchronize(dev)
        log.info("captured CUDA graphs for decode batches of %s sequences", ", ".join(map(str, sizes)))

    def _replay(self, batch: ScheduledBatch, ids: list[int], positions: list[int]) -> torch.Tensor:
        """Hidden states (B, d) of a decode-only batch through the smallest captured graph that fits it."""
        B = len(ids)
        size = next(s for s in self.graph_sizes if s >= B)
        bs = self.config.block_size
        tables = padded_tables([seq.block_table for seq in batch.seqs])
        slots = [seq.block_table[p // bs] * bs + p % bs for seq, p in zip(batch.seqs, positions)]
        dev = self.device
        self._g_ids[0, :B].copy_(torch.tensor(ids), non_blocking=True)
        self._g_pos[0, :B].copy_(torch.tensor(positions), non_blocking=True)
        self._g_slots[:B].copy_(torch.tensor(slots), non_blocking=True)
        self._g_slots[B:size].fill_(self._g_spare)
        self._g_tables[:B, :tables.shape[1]].copy_(tables.to(dev, non_blocking=True))
        self._g_ctx[:B].copy_(torch.tensor([p + 1 for p in positions], dtype=torch.int32), non_blocking=True)
        self._g_ctx[B:size].zero_()
        self.graphs[size].replay()
        self.graph_replays += 1
        return self._g_out[0, :B]

    @torch.inference_mode()
    def execute(self, batch: ScheduledBatch, copies: list[tuple[int, int]], logits_rows: list[int]) -> torch.Tensor:
        """Compute the batch's new tokens; return fp32 logits at the packed token indices `logits_rows`."""
        self.cache.copy_blocks(copies)
        ids, positions = [], []
        for seq, n in zip(batch.seqs, batch.num_new_tokens):
            start = seq.num_computed_tokens
            ids.extend(seq.token_ids[start: start + n])
            positions.extend(range(start, start + n))
        layout = StepLayout(query_lens=list(batch.num_new_tokens),
                            context_lens=[s.num_computed_tokens + n for s, n in zip(batch.seqs, batch.num_new_tokens)],
                            block_tables=[s.block_table for s in batch.seqs])
        if self.cpu_decoder is not None and len(ids) <= self.config.cpu_decode_max_batch and \
                all(n == 1 for n in batch.num_new_tokens):
            self.cpu_decode_steps += 1
            logits = self.cpu_decoder.decode(ids, positions, layout.block_tables)
            return logits if logits_rows == list(range(len(ids))) else logits[logits_rows]
        rows = torch.tensor(logits_rows, dtype=torch.long, device=self.device)
        if self.graphs and len(ids) <= self.graph_sizes[-1] and all(n == 1 for n in batch.num_new_tokens):
            return self.model.logits(self._replay(batch, ids, positions)[rows]).float()
        ids_t = torch.tensor([ids], device=self.device)
        pos_t = torch.tensor([positions], device=self.device)
        ctx = self.context_cls(self.cache, layout, pos_t[0], self.windows)
        h = self.model.hidden_states(ids_t, pos_t, ctx=ctx)
        return self.model.logits(h[0, rows]).float()
