"""Shared by the Triton kernel tests: run kernels under Triton's interpreter where there is no GPU."""
from __future__ import annotations

import os

import pytest
import torch

CUDA = torch.cuda.is_available()
if not CUDA:
    os.environ.setdefault("TRITON_INTERPRET", "1")  # read when a kernel is defined, so before any kernel import

# a test runs on the CPU under the interpreter where there is no GPU, compiled on CUDA with -m gpu
DEVICES = [pytest.param("cpu", marks=pytest.mark.skipif(CUDA, reason="the interpreter runs where there is no GPU")),
           pytest.param("cuda", marks=pytest.mark.gpu)]


@pytest.fixture(autouse=True)
def interpreter_scalars(monkeypatch):
    """Triton 3.6's interpreter turns a loaded scalar into a loop bound with int() of a 1-element array, which
    NumPy 2.4 refuses; read its one element instead (the compiled kernel is not concerned)."""
    if os.environ.get("TRITON_INTERPRET") != "1":
        return
    from triton.runtime import interpreter

    original = interpreter._patch_lang_tensor

    def patched(tensor, scope):
        original(tensor, scope)
        scope.set_attr(tensor, "__index__", lambda self: int(self.handle.data.reshape(-1)[0]))

    monkeypatch.setattr(interpreter, "_patch_lang_tensor", patched)
