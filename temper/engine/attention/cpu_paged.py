"""Paged attention with a C decode kernel for the CPU (cpu_kernels.c), built on first use with the system's C
compiler and loaded through ctypes.

Decode rows read keys and values straight from the block pool (no gather, no mask); prefill chunks keep the
portable path of `TorchPagedContext`. At 128 sequences of ~200 tokens the PyTorch path spent ~0.35 s of a
0.9 s SmolLM2 decode step gathering keys and multiplying them out (2-core EPYC); the kernel reads the same keys
once. The library is compiled with `-march=native` into the temper cache, keyed by the source, the compiler
and the CPU's flags; where no compiler is found or the build fails, `auto` keeps the torch path and says why.
"""
from __future__ import annotations

import ctypes
import functools
import hashlib
import logging
import os
import platform
import shutil
import subprocess
import tempfile
from pathlib import Path

import torch

from temper.engine.attention.triton_paged import TritonPagedContext

log = logging.getLogger(__name__)

# the attention kernel and the whole-step decode forward (cpu_decode.c, which calls the kernel): one library
SOURCES = [Path(__file__).with_name("cpu_kernels.c"), Path(__file__).with_name("cpu_decode.c")]
# reductions vectorize only when float addition may be reassociated; no -ffast-math: linked into a shared
# library it can switch the whole process to flush-to-zero
CFLAGS = ["-O3", "-march=native", "-fPIC", "-shared", "-fopenmp", "-fno-math-errno", "-fno-trapping-math",
          "-fassociative-math", "-fno-signed-zeros"]


class KernelBuildError(RuntimeError):
    """The C kernel could not be built or loaded; the message says why and how to fix it."""


def _cpu_flags() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            return next((line for line in f if line.startswith(("flags", "Features"))), "")
    except OSError:
        return ""


def _compiler() -> str:
    cc = os.environ.get("CC", "cc")
    path = shutil.which(cc) or shutil.which("gcc")
    if path is None:
        raise KernelBuildError(f"no C compiler ({cc!r} or gcc) on PATH: install one (Debian: apt install gcc) "
                               "or use attention_backend='torch'")
    return path


def library_path() -> Path:
    """Where the built kernel lives: <temper cache>/kernels/<hash of source, compiler, flags, CPU>.so."""
    from temper.models.loader import cache_dir

    cc = _compiler()
    version = subprocess.run([cc, "--version"], capture_output=True, text=True, check=False).stdout
    key = hashlib.sha256("\0".join([*(s.read_text() for s in SOURCES), cc, version, " ".join(CFLAGS), platform.machine(),
                                    _cpu_flags()]).encode()).hexdigest()[:16]
    return cache_dir() / "kernels" / f"cpu_paged-{key}.so"


@functools.cache
def load_library() -> ctypes.CDLL:
    """Build the kernel once (atomically: concurrent processes each write a temporary file and rename it) and
    load it. Raises `KernelBuildError` with the compiler's message when it cannot."""
    if platform.system() != "Linux":
        raise KernelBuildError(f"the C attention kernel is built for Linux only, not {platform.system()}")
    path = library_path()
    if not path.exists():
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(suffix=".so", dir=path.parent)
        except OSError as e:
            raise KernelBuildError(f"cannot write the kernel to {path.parent} ({e.strerror}); set TEMPER_CACHE_DIR "
                                   "to a writable folder") from e
        os.close(fd)
        try:
            result = subprocess.run([_compiler(), *CFLAGS, *map(str, SOURCES), "-o", tmp, "-lm"], capture_output=True,
                                    text=True, check=False)
            if result.returncode != 0:
                names = " and ".join(s.name for s in SOURCES)
                raise KernelBuildError(f"building {names} failed:\n{result.stderr.strip()[-2000:]}")
            os.replace(tmp, path)
            log.info("built the CPU kernels (attention, decode step): %s", path)
        finally:
            if os.path.exists(tmp):
                os.unlink(tmp)
    # torch (imported above) has loaded its libgomp.so.1, so the kernel's OpenMP calls share torch's thread pool
    try:
        lib = ctypes.CDLL(str(path))
    except OSError as e:
        raise KernelBuildError(f"loading {path} failed: {e}") from e
    fn = lib.paged_decode_f32
    i64, i32, f32, ptr = ctypes.c_int64, ctypes.c_int, ctypes.c_float, ctypes.c_void_p
    fn.argtypes = [ptr, i64, i64, ptr, ptr, i64, ptr, i64, i64, ptr, ptr, i64, ptr,
                   i32, i32, i32, i32, i32, f32, f32, i32]
    fn.restype = ctypes.c_int
    return lib


def cpu_kernel_available() -> tuple[bool, str]:
    """(True, "") when the kernel builds and loads here, else (False, why)."""
    try:
        load_library()
    except KernelBuildError as e:
        return False, str(e)
    return True, ""


def paged_decode(q: torch.Tensor, k_pool: torch.Tensor, v_pool: torch.Tensor, out: torch.Tensor, rows: torch.Tensor,
                 block_tables: torch.Tensor, context_lens: torch.Tensor, block_size: int, scale: float,
                 softcap: float | None, window: int | None) -> None:
    """Attention for one query token per sequence, written into `out` (the same contract as the Triton kernel's
    `paged_decode`): q and out (H, N, D), pools (Hkv, slots, D), all fp32 CPU tensors with the last dimension
    contiguous; rows, block_tables (B, W) and context_lens int32."""
    B = rows.shape[0]
    if B == 0:
        return
    H, _, D = q.shape
    Hkv = k_pool.shape[0]
    for name, t in (("q", q), ("out", out), ("k_pool", k_pool), ("v_pool", v_pool)):
        if t.dtype != torch.float32 or t.device.type != "cpu" or t.stride(-1) != 1:
            raise ValueError(f"the CPU kernel needs {name} as fp32 on the CPU with its last dimension contiguous")
    if k_pool.stride() != v_pool.stride():
        raise ValueError("the CPU kernel needs k_pool and v_pool laid out alike")
    for name, t in (("rows", rows), ("block_tables", block_tables), ("context_lens", context_lens)):
        if t.dtype != torch.int32 or not t.is_contiguous():
            raise ValueError(f"the CPU kernel needs {name} as a contiguous int32 tensor")
    status = load_library().paged_decode_f32(
        q.data_ptr(), q.stride(0), q.stride(1), k_pool.data_ptr(), v_pool.data_ptr(), k_pool.stride(0),
        out.data_ptr(), out.stride(0), out.stride(1), rows.data_ptr(), block_tables.data_ptr(),
        block_tables.stride(0), context_lens.data_ptr(), B, H, Hkv, D, block_size, float(scale),
        float(softcap or 0.0), int(window or 0))
    if status != 0:
        raise MemoryError("the CPU attention kernel could not allocate its scratch buffers")


class CpuPagedContext(TritonPagedContext):
    """Chunks through the portable path, decode rows through the C kernel (the Triton context's step layout, with
    this module's `paged_decode`)."""

    @staticmethod
    def decode_kernel():
        return paged_decode
