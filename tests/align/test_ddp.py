"""Two processes under torchrun (gloo on CPU) train exactly as one process with the same global batch."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
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
    for name in a:  # Adam normalizes updates, so elements with near-zero gradients carry summation-order noise
        torch.testing.assert_close(a[name], b[name], atol=1e-5, rtol=1e-4, msg=name)
    # the gradient norm is what a wrong normalization (per process instead of per global batch) would change
    logs = [[json.loads(line) for line in Path(f"{p}.run/metrics.jsonl").read_text().splitlines()]
            for p in (single, double)]
    for one, two in zip(*logs):
        assert one["loss"] == pytest.approx(two["loss"], rel=1e-6)
        assert one["grad_norm"] == pytest.approx(two["grad_norm"], rel=1e-5)
