"""`temper plan`: does a model fit a device, how fast will it decode, and what will a token cost.

Everything here is arithmetic on a `ModelConfig` and a spec sheet, so that an architect can size hardware before
buying it: nothing imports torch or touches a GPU. The formulas and their assumptions are in docs/plan.md.
"""
from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

from temper.errors import ModelFormatError, ModelNotFoundError
from temper.models.config import ModelConfig

GiB = 2**30
BITS = (32, 16, 8, 4)
KV_DTYPE_BYTES = {"fp32": 4, "fp16": 2, "bf16": 2, "fp8": 1, "int8": 1}
MAX_GPUS = 64  # the search for "how many GPUs would it need" stops here

# Published config.json shapes from the HF hub, read by ModelConfig.from_hf exactly as the real file would be.
# name: (HF id, model_type, vocab, hidden, intermediate, layers, heads, kv heads, head_dim, tied, context)
_SHAPES: dict[str, tuple[str, str, int, int, int, int, int, int, int, bool, int]] = {
    "llama-2-7b": ("meta-llama/Llama-2-7b-hf", "llama", 32000, 4096, 11008, 32, 32, 32, 128, False, 4096),
    "llama-2-13b": ("meta-llama/Llama-2-13b-hf", "llama", 32000, 5120, 13824, 40, 40, 40, 128, False, 4096),
    "llama-2-70b": ("meta-llama/Llama-2-70b-hf", "llama", 32000, 8192, 28672, 80, 64, 8, 128, False, 4096),
    "llama-3-8b": ("meta-llama/Meta-Llama-3-8B", "llama", 128256, 4096, 14336, 32, 32, 8, 128, False, 8192),
    "llama-3-70b": ("meta-llama/Meta-Llama-3-70B", "llama", 128256, 8192, 28672, 80, 64, 8, 128, False, 8192),
    "mistral-7b": ("mistralai/Mistral-7B-v0.1", "mistral", 32000, 4096, 14336, 32, 32, 8, 128, False, 32768),
    "qwen2-7b": ("Qwen/Qwen2-7B", "qwen2", 152064, 3584, 18944, 28, 28, 4, 128, False, 131072),
    "smollm2-135m-instruct": ("HuggingFaceTB/SmolLM2-135M-Instruct", "llama", 49152, 576, 1536, 30, 9, 3, 64,
                              True, 8192),
    "gemma3-270m": ("google/gemma-3-270m", "gemma3_text", 262144, 640, 2048, 18, 4, 1, 256, True, 32768),
}
# Fields beyond the shape that change memory: Mistral v0.1 attends to a 4096-token window on every layer,
# Gemma 3 to 512 tokens on five layers of six (from_hf derives that pattern).
_EXTRA: dict[str, dict[str, Any]] = {
    "mistral-7b": {"sliding_window": 4096},
    "gemma3-270m": {"sliding_window": 512, "query_pre_attn_scalar": 256},
}
MODEL_PRESETS = tuple(_SHAPES)


@dataclass(frozen=True)
class Device:
    """One accelerator (or a CPU host) as its spec sheet describes it."""

    name: str
    memory_gb: float  # memory of one device, GB (1e9 bytes)
    bandwidth_gbs: float  # peak memory bandwidth of one device, GB/s
    tflops: float  # peak dense fp16/bf16 TFLOP/s (tensor cores, fp32 accumulate, no sparsity)
    price_per_hour: float | None = None  # USD per device-hour, on demand; None: cost is not reported

    def __post_init__(self) -> None:
        for flag, value in (("--memory-gb", self.memory_gb), ("--bandwidth-gbs", self.bandwidth_gbs),
                            ("--tflops", self.tflops)):
            if not value > 0:
                raise ValueError(f"{flag} must be positive, got {value}")
        if self.price_per_hour is not None and self.price_per_hour < 0:
            raise ValueError(f"--price-per-hour must be >= 0, got {self.price_per_hour}")


# Memory, bandwidth and dense TFLOP/s from NVIDIA's datasheets (SXM parts where a PCIe variant exists): A100
# (2020/2021), H100 and H200 (2024), L4 (2023), RTX 4090 from the Ada Lovelace whitepaper (fp16 tensor, fp32
# accumulate). AWS publishes no A10G sheet: 600 GB/s and about 70 TFLOP/s as Baseten's "A10 vs A10G" compares them.
# ASSUMPTION: prices are typical on-demand cloud prices per GPU-hour in 2024-25 (specialist GPU clouds; AWS g5 for
# the A10G); pass --price-per-hour for your own. The `cpu` host is an assumption too: a 16-vCPU, 64 GB cloud VM
# with two DDR5 channels; pass --memory-gb for your RAM size.
DEVICES: dict[str, Device] = {d.name: d for d in [
    Device("a100-40gb", 40, 1555, 312, 1.30),
    Device("a100-80gb", 80, 2039, 312, 1.80),
    Device("h100-80gb", 80, 3350, 989, 2.50),
    Device("h200-141gb", 141, 4800, 989, 3.50),
    Device("l4-24gb", 24, 300, 121, 0.80),
    Device("a10g-24gb", 24, 600, 70, 1.01),
    Device("rtx-4090-24gb", 24, 1008, 165, 0.60),
    Device("cpu", 64, 90, 2, 0.80),
]}
DEFAULT_DEVICE = "h100-80gb"


@dataclass(frozen=True)
class WeightFormat:
    """How the weights are stored. Only the blocks' linear layers are quantized to 8 or 4 bits."""

    bits: int = 16  # 32: fp32; 16: fp16/bf16; 8: int8, one fp32 scale per output row; 4: int4 group-wise
    group_size: int = 128  # int4: input weights that share one fp16 scale (and zero point)
    is_symmetric: bool = False  # int4: scale only; asymmetric also stores an fp16 zero point per group
    head_bits: int = 0  # embedding and lm_head: 0 keeps them 16-bit (32 with --bits 32), 8 int8 rows, 4 int4 groups

    def __post_init__(self) -> None:
        if self.bits not in BITS:
            raise ValueError(f"--bits must be one of {', '.join(map(str, BITS))}, got {self.bits}")
        if self.group_size <= 0:
            raise ValueError(f"--group-size must be positive, got {self.group_size}")

    @property
    def label(self) -> str:
        if self.bits == 4:
            return f"int4 g{self.group_size} {'sym' if self.is_symmetric else 'asym'}"
        return {32: "fp32", 16: "fp16", 8: "int8"}[self.bits]


@dataclass(frozen=True)
class PlanConfig:
    """What is served and how well the hardware is used."""

    context_len: int = 4096  # tokens each sequence holds in the KV cache (prompt + output)
    kv_dtype: str = "fp16"  # element type of the KV cache: fp32, fp16, bf16, fp8 or int8
    num_gpus: int = 1  # tensor parallel: memory, bandwidth and FLOP/s add up (communication is ignored)
    gpu_memory_utilization: float = 0.9  # share of the device memory we may take, as vLLM's flag
    bandwidth_efficiency: float = 0.8  # share of the peak bandwidth a decode step achieves
    mfu: float = 0.5  # share of the peak FLOP/s a matmul-bound step achieves (model FLOPs utilization)

    def __post_init__(self) -> None:
        if self.kv_dtype not in KV_DTYPE_BYTES:
            raise ValueError(f"--kv-dtype must be one of {', '.join(KV_DTYPE_BYTES)}, got {self.kv_dtype!r}")
        for flag, value in (("--context-len", self.context_len), ("--num-gpus", self.num_gpus)):
            if value < 1:
                raise ValueError(f"{flag} must be >= 1, got {value}")
        for flag, value in (("--gpu-memory-utilization", self.gpu_memory_utilization),
                            ("--bandwidth-efficiency", self.bandwidth_efficiency), ("--mfu", self.mfu)):
            if not 0 < value <= 1:
                raise ValueError(f"{flag} must be in (0, 1], got {value}")


# ------------------------------------------------------------------------------------------------ the model
def preset_config(name: str) -> ModelConfig:
    """A preset's ModelConfig, built from its published config.json fields."""
    hf_id, arch, vocab, hidden, inter, layers, heads, kv_heads, head_dim, tied, context = _SHAPES[name]
    return ModelConfig.from_hf({
        "_name_or_path": hf_id, "model_type": arch, "vocab_size": vocab, "hidden_size": hidden,
        "intermediate_size": inter, "num_hidden_layers": layers, "num_attention_heads": heads,
        "num_key_value_heads": kv_heads, "head_dim": head_dim, "tie_word_embeddings": tied,
        "max_position_embeddings": context, **_EXTRA.get(name, {})})


def load_model_config(model: str) -> ModelConfig:
    """A preset name, an HF config.json (or its folder), a .gguf file or a registered temper model."""
    if model in _SHAPES:
        return preset_config(model)
    from temper.models.registry import REGISTRY, resolve

    if model not in REGISTRY and not Path(model).expanduser().exists():
        raise ModelNotFoundError(
            f"unknown model {model!r}: not a preset ({', '.join(MODEL_PRESETS)}), a registered model "
            f"({', '.join(REGISTRY)}), nor an existing config.json, HF folder or .gguf file")
    path = resolve(model)
    if path.is_dir():
        path = path / "config.json"
    if path.suffix == ".gguf":
        from temper.models.gguf_file import config_from_gguf, open_gguf

        return config_from_gguf(open_gguf(path))
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except OSError as e:
        raise ModelFormatError(f"cannot read {path}: {e.strerror}") from None
    except ValueError as e:
        raise ModelFormatError(f"{path} is not valid JSON: {e}") from None
    if not isinstance(raw, dict):
        raise ModelFormatError(f"{path} is not a config.json: it holds a {type(raw).__name__}, not an object")
    return ModelConfig.from_hf(raw)


@dataclass(frozen=True)
class ParamCounts:
    """Parameters by where they live, since they are stored differently."""

    embed: int
    head: int  # 0 when tied to the embedding
    linear: int  # weights of the blocks' q/k/v/o and gate/up/down projections: what quantization compresses
    other: int  # biases and norm weights

    @property
    def total(self) -> int:
        return self.embed + self.head + self.linear + self.other


def block_linear_shapes(cfg: ModelConfig) -> list[tuple[int, int]]:
    """(in, out) features of the seven projections of one block."""
    d, q, kv, ff = cfg.hidden_size, cfg.num_heads * cfg.head_dim, cfg.num_kv_heads * cfg.head_dim, cfg.intermediate_size
    return [(d, q), (d, kv), (d, kv), (q, d), (d, ff), (d, ff), (ff, d)]


def count_params(cfg: ModelConfig) -> ParamCounts:
    """Parameters from the config alone; the total equals `ModelConfig.num_params`."""
    d = cfg.hidden_size
    bias = cfg.num_heads * cfg.head_dim + 2 * cfg.num_kv_heads * cfg.head_dim if cfg.attention_bias else 0
    # llama: attention and MLP norms; gemma3: four norms around attention and MLP, plus q/k norms of head_dim
    norms = 4 * d + 2 * cfg.head_dim if cfg.family == "gemma3" else 2 * d
    linear = sum(i * o for i, o in block_linear_shapes(cfg))
    embed = cfg.vocab_size * d
    return ParamCounts(embed=embed, head=0 if cfg.tie_word_embeddings else embed, linear=cfg.num_layers * linear,
                       other=cfg.num_layers * (bias + norms) + d)  # + d: the final norm


# ------------------------------------------------------------------------------------------------ memory
@dataclass(frozen=True)
class WeightBytes:
    """Bytes of the stored weights, split as ParamCounts is."""

    linear: int  # quantized block projections, scales and zero points included
    embed: int
    head: int
    other: int

    @property
    def total(self) -> int:
        return self.linear + self.embed + self.head + self.other


def matrix_bytes(rows: int, cols: int, bits: int, group_size: int = 128, is_symmetric: bool = False) -> int:
    """Bytes of a (rows=out, cols=in) weight matrix stored in `bits`, with its quantization metadata."""
    if bits >= 16:
        return rows * cols * bits // 8
    if bits == 8:
        return rows * cols + 4 * rows  # one fp32 scale per output row
    # NOTE: as `temper quantize` does, a row that the group size does not divide takes the largest kernel group
    # size below it that does (SmolLM2's 576 inputs: 64 when 128 is asked)
    from temper.quant.tensors import effective_group_size

    groups = rows * (cols // effective_group_size(cols, group_size))
    return math.ceil(rows * cols / 2) + groups * (2 if is_symmetric else 4)


def weight_bytes(cfg: ModelConfig, fmt: WeightFormat) -> WeightBytes:
    counts = count_params(cfg)
    linear = cfg.num_layers * sum(matrix_bytes(o, i, fmt.bits, fmt.group_size, fmt.is_symmetric)
                                  for i, o in block_linear_shapes(cfg))
    # NOTE: the embedding and lm_head stay 16-bit unless asked: quantizing them costs more accuracy than the
    # blocks (GPTQ and AWQ leave them alone, llama.cpp keeps the head at 6 bits or more)
    table_bits = fmt.head_bits if fmt.head_bits and fmt.bits <= 8 else max(fmt.bits, 16)
    table = matrix_bytes(cfg.vocab_size, cfg.hidden_size, table_bits, fmt.group_size, fmt.is_symmetric)
    return WeightBytes(linear=linear, embed=table, head=0 if cfg.tie_word_embeddings else table,
                       other=counts.other * max(fmt.bits, 16) // 8)


def kv_bytes_per_token(cfg: ModelConfig, kv_dtype: str = "fp16") -> int:
    """K and V of one token on every layer (GQA: only the KV heads are stored)."""
    return cfg.num_layers * _kv_bytes_per_layer_token(cfg, kv_dtype)


def _kv_bytes_per_layer_token(cfg: ModelConfig, kv_dtype: str) -> int:
    return 2 * cfg.num_kv_heads * cfg.head_dim * KV_DTYPE_BYTES[kv_dtype]


def held_tokens(cfg: ModelConfig, context_len: int) -> int:
    """Token slots summed over layers: a sliding-window layer keeps only its last `sliding_window` tokens."""
    return sum(context_len if (w := cfg.layer_window(i)) is None else min(context_len, w)
               for i in range(cfg.num_layers))


def kv_bytes_per_seq(cfg: ModelConfig, context_len: int, kv_dtype: str = "fp16") -> int:
    return held_tokens(cfg, context_len) * _kv_bytes_per_layer_token(cfg, kv_dtype)


def max_context_by_memory(cfg: ModelConfig, free_bytes: int, kv_dtype: str = "fp16") -> int | None:
    """The longest single sequence whose KV cache fits `free_bytes`; None when it is unbounded (every layer slides)."""
    per_slot = _kv_bytes_per_layer_token(cfg, kv_dtype)
    num_full = sum(cfg.layer_window(i) is None for i in range(cfg.num_layers))
    window = cfg.sliding_window or 0
    free_bytes = max(free_bytes, 0)
    if free_bytes < cfg.num_layers * window * per_slot:  # shorter than the window: every layer grows
        return free_bytes // (cfg.num_layers * per_slot)
    if num_full == 0:
        return None
    return (free_bytes - (cfg.num_layers - num_full) * window * per_slot) // (num_full * per_slot)


def usable_bytes(device: Device, pc: PlanConfig) -> int:
    """Memory for weights and KV cache.

    The budget is memory × --gpu-memory-utilization; from it we keep 1 GiB per device for the CUDA context,
    cuBLAS workspaces and allocator slack, and 5% of the budget for activations of the largest step.
    """
    budget = device.memory_gb * 1e9 * pc.num_gpus * pc.gpu_memory_utilization
    return int(budget - pc.num_gpus * GiB - 0.05 * budget)


# ------------------------------------------------------------------------------------------------ speed and cost
def flops_per_token(cfg: ModelConfig, attended: int) -> int:
    """Matmul FLOPs of one token: 2 per weight of the blocks and the lm_head (the embedding lookup is free), and
    QK^T plus PV against `attended` cached token slots summed over layers."""
    matmul = count_params(cfg).linear + cfg.vocab_size * cfg.hidden_size
    return 2 * matmul + 4 * cfg.num_heads * cfg.head_dim * attended


@dataclass(frozen=True)
class Decode:
    """Steady decoding of `batch` sequences that each hold --context-len tokens."""

    batch: int
    tokens_per_s: float
    bound: str  # "memory" or "compute": the term that sets the step time
    cost_per_million: float | None  # USD per million output tokens


def cost_per_million(price_per_hour: float, tokens_per_s: float) -> float:
    return price_per_hour / (tokens_per_s * 3600) * 1e6


def decode(cfg: ModelConfig, weights: WeightBytes, device: Device, pc: PlanConfig, batch: int) -> Decode:
    """One decode step reads every weight once (the embedding table only gathers rows) and each sequence's KV
    cache at --context-len; its time is the larger of that read and its FLOPs."""
    read = weights.total - (0 if cfg.tie_word_embeddings else weights.embed)
    read += batch * kv_bytes_per_seq(cfg, pc.context_len, pc.kv_dtype)
    memory_s = read / (device.bandwidth_gbs * 1e9 * pc.num_gpus * pc.bandwidth_efficiency)
    compute_s = batch * flops_per_token(cfg, held_tokens(cfg, pc.context_len)) / _flops(device, pc)
    tps = batch / max(memory_s, compute_s)
    price = None if device.price_per_hour is None else cost_per_million(device.price_per_hour * pc.num_gpus, tps)
    return Decode(batch, tps, "memory" if memory_s >= compute_s else "compute", price)


def prefill_tokens_per_s(cfg: ModelConfig, device: Device, pc: PlanConfig) -> float:
    """Prefill is compute-bound; under the causal mask a prompt token attends to half the context on average."""
    return _flops(device, pc) / flops_per_token(cfg, held_tokens(cfg, pc.context_len // 2))


def _flops(device: Device, pc: PlanConfig) -> float:
    return device.tflops * 1e12 * pc.num_gpus * pc.mfu


# ------------------------------------------------------------------------------------------------ the plan
@dataclass(frozen=True)
class Plan:
    """The answer for one weight format on one device."""

    format: WeightFormat
    weights: WeightBytes
    usable_bytes: int
    kv_seq_bytes: int  # one sequence of --context-len tokens
    num_seqs: int  # sequences of --context-len tokens the KV cache holds at once
    max_context_len: int | None  # longest single sequence by memory; None: unbounded (every layer slides)
    decode: tuple[Decode, ...]  # batch 1 and the largest batch; empty when nothing fits
    prefill_tokens_per_s: float
    min_gpus: int | None  # devices needed for the weights and one sequence; None: more than MAX_GPUS

    @property
    def is_fit(self) -> bool:
        return self.num_seqs >= 1

    @property
    def kv_free_bytes(self) -> int:
        return self.usable_bytes - self.weights.total


def make_plan(cfg: ModelConfig, fmt: WeightFormat, device: Device, pc: PlanConfig) -> Plan:
    weights = weight_bytes(cfg, fmt)
    seq = kv_bytes_per_seq(cfg, pc.context_len, pc.kv_dtype)
    usable = usable_bytes(device, pc)
    free = usable - weights.total
    num_seqs = max(free, 0) // seq
    batches = sorted({1, num_seqs}) if num_seqs else []
    needed = (n for n in range(1, MAX_GPUS + 1)
              if usable_bytes(device, replace(pc, num_gpus=n)) - weights.total >= seq)
    return Plan(format=fmt, weights=weights, usable_bytes=usable, kv_seq_bytes=seq, num_seqs=num_seqs,
                max_context_len=max_context_by_memory(cfg, free, pc.kv_dtype),
                decode=tuple(decode(cfg, weights, device, pc, b) for b in batches),
                prefill_tokens_per_s=prefill_tokens_per_s(cfg, device, pc), min_gpus=next(needed, None))


# ------------------------------------------------------------------------------------------------ output
def _gb(n: float) -> str:
    return f"{n / 1e9:,.2f} GB"


def _money(x: float | None) -> str:
    return "n/a" if x is None else f"${x:,.2f}"


def _context(plan: Plan, cfg: ModelConfig) -> str:
    if plan.max_context_len is None or plan.max_context_len > cfg.max_position_embeddings:
        memory = "any length" if plan.max_context_len is None else f"{plan.max_context_len:,}"
        return f"{cfg.max_position_embeddings:,} tokens (the model's limit; memory holds {memory})"
    return f"{plan.max_context_len:,} tokens (memory)"


def verdict(plan: Plan, cfg: ModelConfig, device: Device, pc: PlanConfig) -> str:
    where = f"{pc.num_gpus} × {device.name}"
    if plan.is_fit:
        return (f"fits: yes, {_gb(plan.weights.total)} of {plan.format.label} weights + KV cache for "
                f"{plan.num_seqs} sequences of {pc.context_len} tokens on {where} ({_gb(plan.usable_bytes)} usable)")
    why = (f"{_gb(plan.weights.total)} of {plan.format.label} weights exceed" if plan.kv_free_bytes < 0 else
           f"{_gb(plan.weights.total)} of {plan.format.label} weights leave no room for one {pc.context_len}-token "
           f"sequence in")
    need = f"needs {plan.min_gpus} × {device.name}" if plan.min_gpus else f"needs more than {MAX_GPUS} devices"
    return f"fits: no, {why} the {_gb(plan.usable_bytes)} usable on {where}; {need}"


def format_report(plan: Plan, cfg: ModelConfig, device: Device, pc: PlanConfig) -> str:
    """The full answer for one weight format: a two-column table, then the verdict."""
    counts, w = count_params(cfg), plan.weights
    price = "n/a" if device.price_per_hour is None else f"${device.price_per_hour:.2f}/h per device (assumed)"
    model = (f"{cfg.name or '?'}: {cfg.num_layers} layers, {cfg.num_heads} heads ({cfg.num_kv_heads} KV) "
             f"× {cfg.head_dim}, hidden {cfg.hidden_size}, vocab {cfg.vocab_size:,}")
    hardware = (f"{pc.num_gpus} × {device.name}: {device.memory_gb:g} GB, {device.bandwidth_gbs:g} GB/s, "
                f"{device.tflops:g} TFLOP/s, {price}")
    weights = (f"{plan.format.label}: {_gb(w.total)} ({w.total / GiB:,.2f} GiB) = blocks {_gb(w.linear)} "
               f"+ embedding {_gb(w.embed)} + lm_head {_gb(w.head)} + norms/biases {_gb(w.other)}")
    usable = (f"{_gb(plan.usable_bytes)} ({pc.gpu_memory_utilization:g} of memory, less 1 GiB per device "
              f"and 5% for activations)")
    kv = (f"{kv_bytes_per_token(cfg, pc.kv_dtype):,} B/token ({pc.kv_dtype}); {_gb(plan.kv_seq_bytes)} per "
          f"{pc.context_len}-token sequence; {_gb(max(plan.kv_free_bytes, 0))} free")
    seqs = f"{plan.num_seqs} sequences of {pc.context_len} tokens"
    if pc.context_len > cfg.max_position_embeddings:
        seqs += f" (longer than the model's {cfg.max_position_embeddings}-token context)"
    params = f"{counts.total / 1e9:.2f} B ({counts.linear / 1e9:.2f} B in block projections)"
    rows = [("model", model), ("parameters", params), ("device", hardware), ("weights", weights),
            ("usable memory", usable), ("KV cache", kv), ("concurrency", seqs),
            ("longest context", _context(plan, cfg)),
            ("prefill", f"{plan.prefill_tokens_per_s:,.0f} tokens/s (MFU {pc.mfu:g})")]
    for d in plan.decode:
        value = f"{d.tokens_per_s:,.1f} tokens/s ({d.bound}-bound); {_money(d.cost_per_million)} per M output tokens"
        rows.append((f"decode, batch {d.batch}", value))
    width = max(len(label) for label, _ in rows)
    return "\n".join([*(f"{label:<{width}}  {value}" for label, value in rows), verdict(plan, cfg, device, pc)])


def format_table(plans: list[Plan], cfg: ModelConfig, device: Device, pc: PlanConfig) -> str:
    """One row per weight format; the verdict of the most precise format that fits closes it."""
    head = ("format", "weights", "fits", f"seqs@{pc.context_len}", "tok/s b=1", "tok/s max", "$/M b=1", "$/M max")
    rows = [head]
    for p in plans:
        first, last = (p.decode[0], p.decode[-1]) if p.decode else (None, None)
        rows.append((p.format.label, _gb(p.weights.total), "yes" if p.is_fit else "no", str(p.num_seqs),
                     f"{first.tokens_per_s:,.1f}" if first else "-", f"{last.tokens_per_s:,.1f}" if last else "-",
                     _money(first.cost_per_million) if first else "-", _money(last.cost_per_million) if last else "-"))
    widths = [max(len(r[i]) for r in rows) for i in range(len(head))]
    lines = ["  ".join(c.ljust(wd) if i == 0 else c.rjust(wd) for i, (c, wd) in enumerate(zip(r, widths)))
             for r in rows]
    title = f"{cfg.name or '?'} on {pc.num_gpus} × {device.name}, KV cache {pc.kv_dtype}"
    best = next((p for p in plans if p.is_fit), plans[-1])
    return "\n".join([title, *lines, verdict(best, cfg, device, pc)])


def to_json(plans: list[Plan], cfg: ModelConfig, device: Device, pc: PlanConfig) -> str:
    counts = count_params(cfg)
    model = {**{k: v for k, v in asdict(cfg).items() if k != "extra"}, "params": counts.total,
             **{f"params_{k}": v for k, v in asdict(counts).items()},
             "kv_bytes_per_token": kv_bytes_per_token(cfg, pc.kv_dtype)}
    out = [{**asdict(p), "weight_bytes": p.weights.total, "kv_free_bytes": p.kv_free_bytes, "is_fit": p.is_fit,
            "verdict": verdict(p, cfg, device, pc)} for p in plans]
    return json.dumps({"model": model, "device": asdict(device), "assumptions": asdict(pc), "plans": out}, indent=2)


# ------------------------------------------------------------------------------------------------ the command
def pick_device(name: str | None, memory_gb: float | None = None, bandwidth_gbs: float | None = None,
                tflops: float | None = None, price_per_hour: float | None = None) -> Device:
    """A preset with any of its numbers replaced by the user's, or a custom device when all three are given."""
    given = {k: v for k, v in (("memory_gb", memory_gb), ("bandwidth_gbs", bandwidth_gbs), ("tflops", tflops))
             if v is not None}
    price = {} if price_per_hour is None else {"price_per_hour": price_per_hour}
    if name is None and given:
        if len(given) < 3:
            raise ValueError("a custom device needs --memory-gb, --bandwidth-gbs and --tflops "
                             "(or --gpu NAME to change some numbers of a preset)")
        return Device("custom", **given, **price)
    name = name or DEFAULT_DEVICE
    if name not in DEVICES:
        raise ValueError(f"unknown --gpu {name!r}; known: {', '.join(DEVICES)} (or give --memory-gb, "
                         f"--bandwidth-gbs and --tflops)")
    return replace(DEVICES[name], **given, **price)


def report(args: Any) -> str:
    """What `temper plan` prints, from its parsed flags (see cli.py)."""
    cfg = load_model_config(args.model)
    device = pick_device(args.gpu, args.memory_gb, args.bandwidth_gbs, args.tflops, args.price_per_hour)
    pc = PlanConfig(context_len=args.context_len, kv_dtype=args.kv_dtype, num_gpus=args.num_gpus,
                    gpu_memory_utilization=args.gpu_memory_utilization,
                    bandwidth_efficiency=args.bandwidth_efficiency, mfu=args.mfu)
    formats = [WeightFormat(bits, args.group_size, args.symmetric, args.head_bits)
               for bits in ([args.bits] if args.bits else BITS)]
    plans = [make_plan(cfg, fmt, device, pc) for fmt in formats]
    if args.json:
        return to_json(plans, cfg, device, pc)
    if args.bits:
        return format_report(plans[0], cfg, device, pc)
    return format_table(plans, cfg, device, pc)
