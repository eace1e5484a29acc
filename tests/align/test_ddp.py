"""Two processes under torchrun (gloo on CPU) train exactly as one process with the same global batch."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[2]


def run(args: list[str]) -> None:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(args, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]


def test_two_processes_equal_one(tmp_path):
    single, double = tmp_path / "single.pt", tmp_path / "ddp.pt"
    run([sys.executable, "tests/align/ddp_worker.py", str(single), "1", "4"])  # global batch 4 = 1 x 4 x 1
    run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
         "tests/align/ddp_worker.py", str(double), "1", "2"])  # global batch 4 = 1 x 2 x 2 processes
    a, b = torch.load(single), torch.load(double)
    assert a.keys() == b.keys() and a
    for name in a:
        torch.testing.assert_close(a[name], b[name], atol=2e-6, rtol=0, msg=name)
