"""Attention backends of the engine: each builds a per-step context that the model's layers call."""
from temper.engine.attention.torch_paged import PagedKVCache, TorchPagedContext
from temper.engine.attention.triton_paged import TritonPagedContext, triton_available

BACKENDS = {"torch": TorchPagedContext, "triton": TritonPagedContext}

__all__ = ["BACKENDS", "PagedKVCache", "TorchPagedContext", "TritonPagedContext", "triton_available"]
