"""Helpers shared by the tests."""
from __future__ import annotations

import torch


def assert_close(actual: torch.Tensor, expected: torch.Tensor, atol: float, rtol: float = 0.0, what: str = "") -> float:
    """torch.testing.assert_close that reports the max and mean absolute difference; returns the max."""
    diff = (actual.float() - expected.float()).abs()
    max_diff, mean_diff = diff.max().item(), diff.mean().item()
    print(f"{what}: max abs diff {max_diff:.3g}, mean {mean_diff:.3g}")
    torch.testing.assert_close(actual.float(), expected.float(), atol=atol, rtol=rtol,
                               msg=lambda m: f"{what}: max abs diff {max_diff:.3g}, mean {mean_diff:.3g}\n{m}")
    return max_diff


def compare_padded_batch(ours, hf, prompts: list[torch.Tensor], atol: float, what: str) -> None:
    """Our logits for prompts right-padded into one batch against transformers' for each prompt alone."""
    T = max(len(p) for p in prompts)
    ids = torch.zeros(len(prompts), T, dtype=torch.long)
    valid = torch.zeros(len(prompts), T, dtype=torch.bool)
    for i, p in enumerate(prompts):
        ids[i, : len(p)], valid[i, : len(p)] = p, True
    logits = ours(ids, key_valid=valid)
    for i, p in enumerate(prompts):
        assert_close(logits[i, : len(p)], hf(p[None]).logits[0], atol=atol, what=f"{what}, prompt of {len(p)} tokens")


def wait_healthy(url: str, proc, timeout: float = 120.0) -> None:
    """Wait until a `temper serve` subprocess answers 200 on /health (fails if it exits or takes too long)."""
    import time

    import httpx

    deadline = time.monotonic() + timeout
    while True:
        try:
            if httpx.get(f"{url}/health").status_code == 200:
                return
        except httpx.TransportError:
            pass
        assert time.monotonic() < deadline and proc.poll() is None, "the server did not start"
        time.sleep(0.2)
