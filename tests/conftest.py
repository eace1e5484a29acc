"""Test tiers: the default run skips `slow` and `gpu` tests; select them with `-m slow` or `-m gpu`."""
from __future__ import annotations

import pytest
import torch


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if not torch.cuda.is_available():
        skip = pytest.mark.skip(reason="needs a CUDA GPU")
        for item in items:
            if "gpu" in item.keywords:
                item.add_marker(skip)


@pytest.fixture(scope="session")
def embedder():
    """The packaged all-MiniLM-L6-v2 (server, RAG and safety tests share one)."""
    from temper.embeddings import Embedder
    return Embedder.load()
