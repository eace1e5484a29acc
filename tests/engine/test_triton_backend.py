"""The Triton decode kernel and the engine on it.

Paged decode attention equals a float64 dense reference (grouped queries, sliding windows, soft-capping, blocks
scattered over the pool); the engine's greedy output on the Triton backend equals the plain forward loop token
for token, through mixed prefill/decode steps, prefix hits and preemption, and on CUDA through captured graphs.
On the CPU the kernel runs under Triton's interpreter (skipped where triton is not installed); `-m gpu` runs it
compiled on CUDA.
"""
from __future__ import annotations

import pytest
import torch

from tests.triton_support import CUDA, DEVICES, interpreter_scalars  # noqa: F401  (sets TRITON_INTERPRET first)

triton = pytest.importorskip("triton", reason="the Triton backend needs the triton package (pip install triton)")

from temper.engine.attention.triton_kernels import paged_decode
from tests.engine.paged_reference import CASES, MODELS, check_engine_matches_loop, check_paged_decode


@pytest.mark.parametrize("case", list(CASES))
@pytest.mark.parametrize("device,dtype", [
    pytest.param("cpu", torch.float32, marks=DEVICES[0].marks),
    pytest.param("cuda", torch.float32, marks=pytest.mark.gpu),
    pytest.param("cuda", torch.bfloat16, marks=pytest.mark.gpu),
    pytest.param("cuda", torch.float16, marks=pytest.mark.gpu),
])
@torch.no_grad()
def test_paged_decode_matches_dense(case, device, dtype):
    check_paged_decode(paged_decode, case, device, dtype)


@pytest.mark.parametrize("name", list(MODELS))
@pytest.mark.parametrize("device", DEVICES)
@torch.no_grad()
def test_engine_on_triton_matches_loop(name, device):
    engine = check_engine_matches_loop(name, device, "triton")
    if device == "cuda":
        assert engine.runner.graph_replays > 0, "no decode step ran through a captured CUDA graph"
