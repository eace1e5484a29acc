"""Result sets of `temper eval` (schema `temper-eval/1`): loading, reading metrics, formatting numbers.

A result set is the JSON one `temper eval` run writes. The report, the plots and the model card read them only
through the functions here, so a change of schema touches one file.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from temper.errors import TemperError

SCHEMA = "temper-eval/1"

# The suites in the order the report shows them.
SUITES = ("safety", "instructions", "rag", "quality", "speed")

# The metrics we know, per suite, in display order; a metric not listed here is shown after these.
KNOWN_METRICS = {
    "safety": ("harmful_compliance", "harmful_answered", "over_refusal", "benign_answered"),
    "instructions": ("verifiable_strict", "verifiable_loose", "ended_turn"),
    "rag": ("recall_at_5", "rag_correct", "bare_correct", "unanswerable_abstained", "answerable_abstained",
            "faithfulness"),
    "quality": ("perplexity", "perplexity_partial"),
    "speed": ("output_tok_s_max", "ttft_p50_ms", "tpot_p50_ms", "rss_bytes", "usd_per_million_output_tokens"),
}

# The rows of the report's summary table: (suite, metric). `identity.weight_bytes` is the row ("identity", ...).
HEADLINE = (("safety", "harmful_compliance"), ("safety", "over_refusal"), ("instructions", "verifiable_strict"),
            ("rag", "rag_correct"), ("rag", "recall_at_5"), ("rag", "unanswerable_abstained"),
            ("quality", "perplexity"), ("speed", "output_tok_s_max"), ("speed", "ttft_p50_ms"),
            ("speed", "tpot_p50_ms"), ("speed", "rss_bytes"), ("speed", "usd_per_million_output_tokens"),
            ("identity", "weight_bytes"))


@dataclass(frozen=True)
class Metric:
    """One measured number of a result set."""
    value: float
    unit: str
    is_higher_better: bool
    label: str
    n: int | None = None
    ci95: tuple[float, float] | None = None


def load_results(paths: list[str | Path]) -> list[dict]:
    """Read result sets from JSON files and folders.

    Args:
        paths: files, each one result set, or folders, whose `*.json` files of schema `temper-eval/1` are read
            (other JSON files there are skipped) in the order of their `created` field.
    Returns:
        The result sets, files in the order given, each folder's sorted by `created`.
    Raises:
        TemperError: a path does not exist, or a file given by name is not valid JSON or not our schema.
    """
    results: list[dict] = []
    for path in map(Path, paths):
        if path.is_dir():
            found = [r for r in map(_read_json, sorted(path.glob("*.json")))
                     if isinstance(r, dict) and r.get("schema") == SCHEMA]
            results += sorted(found, key=lambda r: str(r.get("created") or ""))
        elif path.is_file():
            result = _read_json(path)
            schema = result.get("schema") if isinstance(result, dict) else f"a JSON {type(result).__name__}"
            if schema != SCHEMA:
                raise TemperError(f"{path}: not a temper eval result (schema {schema!r}, expected {SCHEMA!r})")
            results.append(result)
        else:
            raise TemperError(f"{path}: no such file or folder")
    if not results:
        raise TemperError(f"no temper eval results (schema {SCHEMA!r}) in {', '.join(map(str, paths))}")
    return results


def _read_json(path: Path) -> object:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise TemperError(f"{path}: not valid JSON ({e})") from None


def label_of(result: dict) -> str:
    return str(result.get("label") or (result.get("identity") or {}).get("name") or "unnamed")


def suite(result: dict, name: str) -> dict | None:
    """The suite's entry when it ran (status ok), else None."""
    entry = (result.get("suites") or {}).get(name)
    return entry if isinstance(entry, dict) and entry.get("status", "ok") == "ok" else None


def suite_status(result: dict, name: str) -> str:
    """How a suite went, in words: 'ok', 'not run', 'skipped (reason)' or 'error (reason)'."""
    entry = (result.get("suites") or {}).get(name)
    if not isinstance(entry, dict):
        return "not run"
    status = str(entry.get("status", "ok"))
    return f"{status} ({entry['reason']})" if entry.get("reason") and status != "ok" else status


def metric(result: dict, suite_name: str, name: str) -> Metric | None:
    """A metric of a result set, or None when its suite did not run or did not record it."""
    if suite_name == "identity":
        weight_bytes = (result.get("identity") or {}).get(name)
        return None if weight_bytes is None else Metric(float(weight_bytes), "bytes", False, "weight files on disk")
    entry = suite(result, suite_name)
    raw = ((entry or {}).get("metrics") or {}).get(name)
    if not isinstance(raw, dict) or raw.get("value") is None:
        return None
    ci = raw.get("ci95")
    return Metric(value=float(raw["value"]), unit=str(raw.get("unit", "")),
                  is_higher_better=bool(raw.get("higher_is_better", True)),
                  label=str(raw.get("label") or name.replace("_", " ")), n=raw.get("n"),
                  ci95=(float(ci[0]), float(ci[1])) if ci else None)


def metric_names(results: list[dict], suite_name: str) -> list[str]:
    """The metrics of a suite that any result set recorded: the known ones in order, then the others."""
    known = KNOWN_METRICS.get(suite_name, ())
    seen = {name for r in results for name in ((suite(r, suite_name) or {}).get("metrics") or {})}
    return [m for m in known if m in seen] + sorted(seen - set(known))


def best_indices(values: list[Metric | None]) -> set[int]:
    """The positions of the best value (ties included); empty when fewer than two values are there to compare, or
    when they are all equal."""
    present = [(i, m) for i, m in enumerate(values) if m is not None]
    if len({m.value for _, m in present}) < 2:
        return set()
    pick = max if present[0][1].is_higher_better else min
    best = pick(m.value for _, m in present)
    return {i for i, m in present if m.value == best}


def format_value(value: float, unit: str) -> str:
    """A number as the report shows it: a ratio as a percentage, bytes in MiB/GiB, and so on."""
    if unit == "ratio":
        return f"{value * 100:.1f}%"
    if unit == "bytes":
        return f"{value / 2**30:,.2f} GiB" if value >= 2**30 else f"{value / 2**20:,.1f} MiB"
    if unit == "usd":
        return f"${value:,.2f}" if value >= 0.1 else f"${value:.4f}"
    if unit == "ppl":
        return f"{value:,.2f}"
    if unit in ("tok/s", "ms"):
        return f"{value:,.1f} {unit}"
    return f"{value:.4g} {unit}".rstrip()


def format_ci(m: Metric) -> str:
    """'95% CI 8.1%–18.0%', or '' when the metric has no interval."""
    if m.ci95 is None:
        return ""
    return f"95% CI {format_value(m.ci95[0], m.unit)}–{format_value(m.ci95[1], m.unit)}"


def format_metric(m: Metric) -> str:
    """The value with its interval and sample size: '12.5% (95% CI 8.1%–18.0%, n = 128)'."""
    extra = [s for s in (format_ci(m), f"n = {m.n}" if m.n else "") if s]
    return format_value(m.value, m.unit) + (f" ({', '.join(extra)})" if extra else "")
