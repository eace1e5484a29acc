"""Engine settings, validated where they are made; the CLI help comes from these comments."""
from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class EngineConfig:
    """How the engine batches, caches and where it runs."""

    block_size: int = 8  # tokens per KV block (8 beat 16 on ShareGPT: KV utilization 0.976 vs 0.952, and faster)
    max_num_seqs: int = 128  # most sequences in one step
    max_num_batched_tokens: int = 512  # token budget of one step (prefill chunks plus decodes)
    kv_cache_memory: int | None = None  # bytes for the KV pool; None: kv_cache_fraction of available memory
    kv_cache_fraction: float = 0.2  # share of available memory (CPU RAM, or free GPU memory) for the pool
    enable_prefix_caching: bool = True
    enable_chunked_prefill: bool = True  # split long prompts across steps, mixed with decodes
    max_model_len: int | None = None  # context limit; None: the model's
    # auto: the Triton decode kernel on CUDA where triton is installed; on the CPU with fp32 weights the C decode
    # kernel (built on first use with the system's C compiler); else the portable torch path
    attention_backend: str = "auto"
    # decode-only steps of up to this many sequences run as one C call (temper/engine/cpu_decode.py) on the `cpu`
    # backend for Llama-family and Gemma 3 models (fp32, int8 or int4 weights); 0 keeps every step on the PyTorch
    # path. At 32 sequences the C call and the PyTorch path (MKL GEMMs) ran at the same speed on SmolLM2 (2-core EPYC)
    cpu_decode_max_batch: int = 16
    cuda_graphs: bool = True  # capture decode steps in CUDA graphs (CUDA with the triton backend)
    max_graph_batch: int = 256  # largest decode batch captured; bigger batches run eagerly
    seed: int = 0  # seed of the shared generator for requests without their own seed
    # fuse q/k/v and gate/up into one matmul each; off when a trainer generates with the live weights (fusing
    # gives the layers new parameter tensors, which the optimizer would no longer see)
    fuse_projections: bool = True

    def __post_init__(self) -> None:
        if self.block_size < 1 or self.block_size & (self.block_size - 1):
            raise ValueError(f"block_size must be a power of two, got {self.block_size}")
        if self.max_num_seqs < 1:
            raise ValueError(f"max_num_seqs must be >= 1, got {self.max_num_seqs}")
        if self.max_num_batched_tokens < 1:
            raise ValueError(f"max_num_batched_tokens must be >= 1, got {self.max_num_batched_tokens}")
        if self.attention_backend not in ("auto", "torch", "triton", "cpu"):
            raise ValueError(f"attention_backend must be auto, torch, triton or cpu, got {self.attention_backend!r}")
        if self.cpu_decode_max_batch < 0:
            raise ValueError(f"cpu_decode_max_batch must be >= 0, got {self.cpu_decode_max_batch}")
        if self.max_graph_batch < 1:
            raise ValueError(f"max_graph_batch must be >= 1, got {self.max_graph_batch}")
        if self.kv_cache_memory is not None and self.kv_cache_memory <= 0:
            raise ValueError(f"kv_cache_memory must be positive bytes, got {self.kv_cache_memory}")
        if not 0.0 < self.kv_cache_fraction <= 0.95:
            raise ValueError(f"kv_cache_fraction must be in (0, 0.95], got {self.kv_cache_fraction}")
