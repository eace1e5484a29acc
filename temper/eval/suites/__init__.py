"""The evaluation suites of `temper eval`, one module each, behind a registry.

A suite is `run(target, options) -> {"metrics": {...}, "details": {...}, "samples": [...]}`; the runner adds
its status, seconds and error. A metric is `{"value", "unit", "higher_is_better", "label", "n", "ci95"}`
(`metric` and `rate` below build them), so the report can compare any metric of any suite without knowing it.
"""
from __future__ import annotations

import importlib
from typing import Any

from temper.stats import wilson_interval

SUITES = {  # name -> (module, one line on what it measures)
    "safety": ("temper.eval.suites.safety", "harmful compliance and over-refusal (held-out red-team, benign-edgy)"),
    "instructions": ("temper.eval.suites.instructions", "verifiable-instruction accuracy on held-out types"),
    "rag": ("temper.eval.suites.rag", "RAG QA on the Python docs: retrieval, correct answers, abstention"),
    "quality": ("temper.eval.suites.quality", "perplexity on held-out Python documentation"),
    "speed": ("temper.eval.suites.speed", "serving speed: throughput vs concurrency, latency, memory, cost"),
}


class SuiteSkipped(Exception):
    """A suite that cannot run on this target or machine; the message says why (it is recorded, not fatal)."""


def suite_module(name: str):
    if name not in SUITES:
        raise KeyError(name)
    return importlib.import_module(SUITES[name][0])


def metric(value: float | None, unit: str, higher_is_better: bool, label: str, n: int | None = None,
           ci95: tuple[float, float] | list[float] | None = None) -> dict[str, Any]:
    return {"value": value, "unit": unit, "higher_is_better": higher_is_better, "label": label, "n": n,
            "ci95": [round(ci95[0], 4), round(ci95[1], 4)] if ci95 is not None else None}


def rate(flags: list[bool], label: str, higher_is_better: bool) -> dict[str, Any]:
    """A proportion with its 95% Wilson interval (None when there is nothing to count)."""
    k, n = sum(bool(f) for f in flags), len(flags)
    if n == 0:
        return metric(None, "ratio", higher_is_better, label, 0, None)
    return metric(round(k / n, 4), "ratio", higher_is_better, label, n, wilson_interval(k, n))
