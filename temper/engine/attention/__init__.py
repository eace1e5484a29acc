"""Attention backends of the engine: each builds a per-step context that the model's layers call."""
from temper.engine.attention.cpu_paged import CpuPagedContext, cpu_kernel_available
from temper.engine.attention.torch_paged import PagedKVCache, TorchPagedContext
from temper.engine.attention.triton_paged import TritonPagedContext, triton_available

BACKENDS = {"torch": TorchPagedContext, "triton": TritonPagedContext, "cpu": CpuPagedContext}

__all__ = ["BACKENDS", "CpuPagedContext", "PagedKVCache", "TorchPagedContext", "TritonPagedContext",
           "cpu_kernel_available", "triton_available"]
