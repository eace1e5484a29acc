"""`temper eval`: run the evaluation suites against a model or an endpoint and write one JSON result set.

    temper eval --model smollm2-135m-instruct --suites safety,instructions,quality,speed -o results/ --label base
    temper eval --endpoint http://127.0.0.1:8000/v1 --weights runs/prod/int4 --label served -o results/

The result set (schema `temper-eval/1`, docs/eval.md) holds the model's identity (weights sha256,
quantization, recipe, licence), the machine, the versions, the time, and per suite its status, metrics (each
with n and a 95% interval where it is a proportion), details and a few samples. It is rewritten after every
suite, so an interrupted run keeps what finished; `--resume` skips the suites a result file already holds for
the same weights.
"""
from __future__ import annotations

import argparse
import json
import logging
import re
import time
import traceback
from pathlib import Path
from typing import Any

from temper.errors import TemperError
from temper.eval import identity as I
from temper.eval.suites import SUITES, SuiteSkipped, suite_module

log = logging.getLogger(__name__)
SCHEMA = "temper-eval/1"


def parse_sets(items: list[str]) -> dict[str, dict[str, Any]]:
    """`suite.key=value` (value parsed as YAML: numbers, lists, booleans) -> {suite: {key: value}}."""
    import yaml

    out: dict[str, dict[str, Any]] = {}
    for item in items:
        key, sep, value = item.partition("=")
        suite, dot, name = key.partition(".")
        if not sep or not dot or not name:
            raise TemperError(f"--set {item!r}: write SUITE.KEY=VALUE, e.g. safety.harmful=50")
        if suite not in SUITES:
            raise TemperError(f"--set {item!r}: no suite {suite!r} (suites: {', '.join(SUITES)})")
        out.setdefault(suite, {})[name] = yaml.safe_load(value)
    return out


def parse_suites(text: str) -> list[str]:
    names = [s.strip() for s in text.split(",") if s.strip()]
    if names == ["all"]:
        return list(SUITES)
    unknown = [n for n in names if n not in SUITES]
    if unknown or not names:
        raise TemperError(f"unknown suite(s) {', '.join(unknown) or '(none given)'}: choose from "
                          f"{', '.join(SUITES)} (comma-separated) or all")
    return names


def evaluate(target, suites: list[str], options: dict[str, dict[str, Any]] | None = None, label: str | None = None,
             out: Path | None = None, identity: dict[str, Any] | None = None, resume: bool = False) -> dict[str, Any]:
    """Run `suites` on `target`; returns the result set (and writes it to `out`, a .json path, after each suite)."""
    options = options or {}
    start = time.perf_counter()
    result: dict[str, Any] = {
        "schema": SCHEMA, "label": label or Path(target.model).name, "created": I.now(), "seconds": 0.0,
        "target": target.describe(), "identity": identity or {"name": target.model}, "machine": I.machine(),
        "versions": I.versions(), "suites": {},
    }
    if resume and out is not None and out.exists():
        old = json.loads(out.read_text())
        if old.get("identity", {}).get("sha256") == result["identity"].get("sha256"):
            result["suites"] = {k: v for k, v in old.get("suites", {}).items() if v.get("status") == "ok"}
            result["created"] = old.get("created", result["created"])
    for name in suites:
        if name in result["suites"]:
            log.info("eval %s: %s already measured (--resume)", result["label"], name)
            continue
        log.info("eval %s: %s (%s)", result["label"], name, SUITES[name][1])
        t0 = time.perf_counter()
        try:
            entry: dict[str, Any] = {"status": "ok", **suite_module(name).run(target, options.get(name, {}))}
        except SuiteSkipped as e:
            entry = {"status": "skipped", "reason": str(e)}
            log.warning("eval %s: %s skipped: %s", result["label"], name, e)
        except (TemperError, OSError, RuntimeError, ValueError) as e:
            entry = {"status": "error", "reason": f"{type(e).__name__}: {e}",
                     "traceback": traceback.format_exc(limit=6)}
            log.error("eval %s: %s failed: %s", result["label"], name, e)
        entry["seconds"] = round(time.perf_counter() - t0, 1)
        result["suites"][name] = entry
        _fill_identity(result["identity"], target)
        result["seconds"] = round(time.perf_counter() - start, 1)
        if out is not None:
            _write(out, result)
    result["seconds"] = round(time.perf_counter() - start, 1)
    if out is not None:
        _write(out, result)
    return result


def _fill_identity(ident: dict[str, Any], target) -> None:
    llm = getattr(target, "_llm", None)
    if llm is not None and not ident.get("parameters"):
        ident["parameters"] = I.count_parameters(llm.engine.model)


def _write(path: Path, result: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(result, indent=1, ensure_ascii=False, default=str))
    tmp.replace(path)


def _fmt(m: dict[str, Any]) -> str:
    v = m.get("value")
    if v is None:
        return "-"
    unit = m.get("unit")
    if unit == "ratio":
        ci = m.get("ci95")
        return f"{100 * v:.1f}%" + (f" [{100 * ci[0]:.0f}, {100 * ci[1]:.0f}]" if ci else "")
    if unit == "bytes":
        return f"{v / 2**20:.0f} MiB"
    if unit == "usd":
        return f"${v:.4g}"
    return f"{v:g} {unit}"


def summary_table(result: dict[str, Any]) -> str:
    lines = [f"{result['label']}: {result['target'].get('model')} ({result['seconds']:.0f} s)"]
    for name, s in result["suites"].items():
        if s["status"] != "ok":
            lines.append(f"  {name:<13} {s['status']}: {s.get('reason', '')}")
            continue
        for key, m in s["metrics"].items():
            lines.append(f"  {name:<13} {m.get('label', key):<44} {_fmt(m)}")
    return "\n".join(lines)


def add_parser(sub: argparse._SubParsersAction) -> argparse.ArgumentParser:
    p = sub.add_parser("eval", help="run evaluation suites against a model or an endpoint; write JSON results",
                       description=__doc__.split("\n\n")[0],
                       epilog="suites: " + "; ".join(f"{k}: {v[1]}" for k, v in SUITES.items()))
    what = p.add_mutually_exclusive_group()
    what.add_argument("-m", "--model", default=None, help="registered name or model folder, run in this process")
    what.add_argument("--endpoint", default=None, metavar="URL",
                      help="an OpenAI-compatible server, e.g. http://127.0.0.1:8000/v1")
    p.add_argument("--quantization", default=None, help="--model: quantize at load (int8, int4, gguf)")
    p.add_argument("--served-model", default=None, help="--endpoint: model id to request (default: the first)")
    p.add_argument("--api-key", default=None, help="--endpoint: sent as a bearer token")
    p.add_argument("--weights", default=None, metavar="MODEL",
                   help="--endpoint: the model folder or name it serves, to record its identity (sha256, recipe)")
    p.add_argument("--guard", default=None, metavar="POLICY", help="--endpoint: record the guard policy it runs")
    p.add_argument("--suites", default="safety,instructions,rag,quality,speed",
                   help=f"comma-separated: {','.join(SUITES)} or all (default: all)")
    p.add_argument("-o", "--output", default="results", help="folder for LABEL.json (default: results/)")
    p.add_argument("--label", default=None, help="name of this result set in reports (default: the model's)")
    p.add_argument("--set", action="append", default=[], metavar="SUITE.KEY=VALUE",
                   help="a suite option, e.g. safety.harmful=50, speed.levels=[1,8], rag.collection=pydocs")
    p.add_argument("--rag-store", default=None, metavar="URI", help="rag suite: the store of the collection")
    p.add_argument("--rag-collection", default=None, help="rag suite: the collection (default: pydocs)")
    p.add_argument("--price-per-hour", type=float, default=None, help="speed suite: USD per hour of this machine")
    p.add_argument("--resume", action="store_true", help="keep the suites LABEL.json already holds for these weights")
    return p


def run(args: argparse.Namespace) -> int:
    from temper.eval.target import EndpointTarget, LocalTarget

    suites = parse_suites(args.suites)
    options = parse_sets(args.set)
    if args.rag_store:
        options.setdefault("rag", {})["store"] = args.rag_store
    if args.rag_collection:
        options.setdefault("rag", {})["collection"] = args.rag_collection
    if args.price_per_hour is not None:
        options.setdefault("speed", {})["price_per_hour"] = args.price_per_hour
    if args.endpoint:
        target = EndpointTarget(args.endpoint, args.served_model, args.api_key, guard=args.guard,
                                rag_collection=args.rag_collection)
        ident = I.model_identity(args.weights) if args.weights else {"name": target.model}
    else:
        model = args.model or "smollm2-135m-instruct"
        target = LocalTarget(model, args.quantization)
        ident = I.model_identity(model, args.quantization)
    label = args.label or Path(target.model).name
    out = Path(args.output) / f"{_safe(label)}.json"
    options.setdefault("speed", {}).setdefault("log_dir", str(Path(args.output)))
    result = evaluate(target, suites, options, label, out, ident, resume=args.resume)
    print(summary_table(result))
    print(f"results written to {out}")
    failed = [n for n, s in result["suites"].items() if s["status"] == "error"]
    return 1 if failed else 0


def _safe(label: str) -> str:
    """A file name for a label: "served: int4 + guard" -> "served-int4-guard"."""
    return re.sub(r"-{2,}", "-", "".join(c if c.isalnum() or c in "-_." else "-" for c in label)).strip("-") or "result"
