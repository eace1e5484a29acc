"""Runs the model over one scheduled batch on the paged KV cache and returns the logits to sample from."""
from __future__ import annotations

import logging

import torch

from temper.engine.attention import BACKENDS, PagedKVCache
from temper.engine.attention.torch_paged import StepLayout
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
        self.cache = PagedKVCache.allocate(model.config, self.num_blocks, config.block_size, self.device, model.dtype)
        self.context_cls = BACKENDS[config.attention_backend]
        self.windows = model.windows
        log.info("KV cache: %d blocks of %d tokens (%.0f MiB)", self.num_blocks, config.block_size,
                 self.num_blocks * per_block / 2**20)

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
        ids_t = torch.tensor([ids], device=self.device)
        pos_t = torch.tensor([positions], device=self.device)
        ctx = self.context_cls(self.cache, layout, pos_t[0], self.windows)
        h = self.model.hidden_states(ids_t, pos_t, ctx=ctx)
        rows = torch.tensor(logits_rows, dtype=torch.long, device=self.device)
        return self.model.logits(h[0, rows]).float()
