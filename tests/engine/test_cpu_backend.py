"""The C decode kernel for the CPU (temper/engine/attention/cpu_kernels.c) and the engine on it.

Paged decode attention equals a float64 dense reference (grouped queries, sliding windows, soft-capping, blocks
scattered over the pool); the engine's greedy output on the `cpu` backend equals the plain forward loop token for
token through mixed prefill/decode steps, prefix hits and preemption, as it does on the portable `torch` backend;
`auto` picks the kernel on the CPU and falls back to torch, saying why, where it cannot be built.
"""
from __future__ import annotations

import logging

import pytest
import torch

from temper.engine.attention import cpu_paged
from temper.engine.attention.cpu_paged import KernelBuildError, cpu_kernel_available, paged_decode
from temper.engine.model_runner import ModelRunner
from tests.engine.paged_reference import CASES, MODELS, check_engine_matches_loop, check_paged_decode

AVAILABLE, WHY = cpu_kernel_available()
needs_kernel = pytest.mark.skipif(not AVAILABLE, reason=f"the C attention kernel cannot be built here: {WHY}")


@pytest.fixture
def unloaded():
    """The kernel's load cache emptied before the test (which breaks the build) and again after it."""
    cpu_paged.load_library.cache_clear()
    yield
    cpu_paged.load_library.cache_clear()


@needs_kernel
@pytest.mark.parametrize("case", list(CASES))
@torch.no_grad()
def test_paged_decode_matches_dense(case):
    check_paged_decode(paged_decode, case)


@needs_kernel
def test_paged_decode_zero_context_writes_zeros_and_bad_input_is_refused():
    q = torch.randn(4, 2, 16)
    pool = torch.randn(2, 32, 16)
    out = torch.full_like(q, float("nan"))
    paged_decode(q, pool, pool, out, torch.tensor([1], dtype=torch.int32), torch.zeros(1, 1, dtype=torch.int32),
                 torch.tensor([0], dtype=torch.int32), 16, 0.25, None, None)
    assert (out[:, 1] == 0).all() and out[:, 0].isnan().all()
    with pytest.raises(ValueError, match="fp32"):
        paged_decode(q.bfloat16(), pool, pool, out, torch.tensor([1], dtype=torch.int32),
                     torch.zeros(1, 1, dtype=torch.int32), torch.tensor([1], dtype=torch.int32), 16, 0.25, None, None)
    with pytest.raises(ValueError, match="int32"):
        paged_decode(q, pool, pool, out, torch.tensor([1]), torch.zeros(1, 1, dtype=torch.int32),
                     torch.tensor([1], dtype=torch.int32), 16, 0.25, None, None)


@pytest.mark.parametrize("backend", [pytest.param("cpu", marks=needs_kernel), "torch"])
@pytest.mark.parametrize("name", list(MODELS))
@torch.no_grad()
def test_engine_matches_loop(name, backend):
    check_engine_matches_loop(name, "cpu", backend)


@needs_kernel
def test_auto_picks_the_kernel_for_fp32_on_cpu_and_torch_otherwise():
    cpu = torch.device("cpu")
    assert ModelRunner.choose_backend("auto", cpu, 64, torch.float32) == "cpu"
    assert ModelRunner.choose_backend("auto", cpu, 64, torch.bfloat16) == "torch"
    with pytest.raises(ValueError, match="fp32 model on the CPU"):
        ModelRunner.choose_backend("cpu", cpu, 64, torch.bfloat16)


def test_auto_falls_back_to_torch_when_the_kernel_cannot_build(monkeypatch, tmp_path, caplog, unloaded):
    monkeypatch.setenv("TEMPER_CACHE_DIR", str(tmp_path))  # no built library to reuse
    monkeypatch.setenv("CC", "/nonexistent/cc")
    monkeypatch.setattr(cpu_paged.shutil, "which", lambda name: None)
    with pytest.raises(KernelBuildError, match="no C compiler"):
        cpu_paged.load_library()
    with caplog.at_level(logging.WARNING, logger="temper.engine.model_runner"):
        assert ModelRunner.choose_backend("auto", torch.device("cpu"), 64, torch.float32) == "torch"
    assert "no C compiler" in caplog.text
    with pytest.raises(ValueError, match="no C compiler"):
        ModelRunner.choose_backend("cpu", torch.device("cpu"), 64, torch.float32)


@needs_kernel
def test_a_compile_error_is_reported(monkeypatch, tmp_path, unloaded):
    bad = tmp_path / "bad.c"
    bad.write_text("int paged_decode_f32( { this is not C }\n")
    monkeypatch.setenv("TEMPER_CACHE_DIR", str(tmp_path))
    monkeypatch.setattr(cpu_paged, "SOURCES", [bad])
    with pytest.raises(KernelBuildError, match="building bad.c failed"):
        cpu_paged.load_library()
    assert not list((tmp_path / "kernels").glob("*.so")), "a failed build left a library behind"


@needs_kernel
def test_an_unwritable_cache_is_a_build_error(monkeypatch, tmp_path, unloaded):
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("")
    monkeypatch.setenv("TEMPER_CACHE_DIR", str(blocker))  # <cache>/kernels cannot be made under a file
    with pytest.raises(KernelBuildError, match="set TEMPER_CACHE_DIR"):
        cpu_paged.load_library()
