"""Attention backends of the engine: each builds a per-step context that the model's layers call."""
from temper.engine.attention.torch_paged import PagedKVCache, TorchPagedContext

BACKENDS = {"torch": TorchPagedContext}

__all__ = ["BACKENDS", "PagedKVCache", "TorchPagedContext"]
