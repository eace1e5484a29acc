"""`temper redteam`: attack an OpenAI-compatible endpoint and report attack success rates and over-refusal.

`add_parser` registers the subcommand; `run` loads the objectives and the judge lazily (temper.safety.data and
temper.safety.judges), runs or resumes the attacks and writes the reports. Heavy imports stay inside `run` so
building the CLI parser stays cheap.
"""
from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Mapping, Sequence
from typing import Any

from temper.safety.redteam.attacks import ATTACKS, AttackResources, JailbreakTemplate, Objective


def parse_families(value: str) -> tuple[str, ...]:
    """Comma-separated family names (or "all"), checked against the registry."""
    names = tuple(dict.fromkeys(v.strip() for v in value.split(",") if v.strip()))
    if names == ("all",):
        return tuple(ATTACKS)
    unknown = [n for n in names if n not in ATTACKS]
    if not names or unknown:
        raise argparse.ArgumentTypeError(f"unknown attack families {', '.join(unknown) or '(none given)'}; "
                                         f"choose from {', '.join(ATTACKS)}")
    return names


def add_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Register `redteam` and its flags on a subparsers object; return the new parser."""
    p = subparsers.add_parser(
        "redteam", help="attack an OpenAI-compatible endpoint; report attack success rates and over-refusal",
        description="Send an attack library (direct, jailbreak templates, role-play, encodings, rephrasings, "
                    "many-shot, prompt injection) to a chat endpoint, judge every reply, and write results.jsonl "
                    "(resumable: rerun the same command to continue), summary.json, report.md and report.html.")
    p.add_argument("--target", required=True, help="base URL of the API, e.g. http://127.0.0.1:8000/v1")
    p.add_argument("--model", required=True, help="model name to send in each request")
    p.add_argument("--api-key", default=None, help="bearer token (default: $TEMPER_API_KEY, first key)")
    p.add_argument("--attacks", type=parse_families, default=tuple(ATTACKS), metavar="FAMILIES",
                   help=f"comma-separated families (default: all: {','.join(ATTACKS)})")
    p.add_argument("--max-objectives", type=int, default=None, metavar="N",
                   help="a seeded sample of N objectives per family, and N benign prompts (default: all)")
    p.add_argument("--concurrency", type=int, default=8, help="requests in flight (default: 8)")
    p.add_argument("--max-tokens", type=int, default=128, help="most tokens per reply (default: 128)")
    p.add_argument("--temperature", type=float, default=0.0, help="sampling temperature (default: 0)")
    p.add_argument("--seed", type=int, default=0, help="seed of the attack draws and requests (default: 0)")
    p.add_argument("--output", default=None, metavar="DIR", help="output folder (default: redteam-<model>)")
    p.add_argument("--overwrite", action="store_true", help="discard the results already in the output folder")
    p.add_argument("--no-benign", action="store_true", help="skip the benign-edgy prompts (no over-refusal)")
    p.add_argument("--timeout", type=float, default=120.0, metavar="S", help="seconds per request (default: 120)")
    p.add_argument("--retries", type=int, default=3, help="retries on connection errors, 429 and 5xx (default: 3)")
    p.add_argument("--split", default="test", help="data split of objectives and templates (default: test)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    return p


def _field(item: Any, name: str, source: str) -> Any:
    """``item.name`` or ``item[name]``; a ValueError naming the data function when neither exists."""
    if isinstance(item, Mapping) and name in item:
        return item[name]
    if hasattr(item, name):
        return getattr(item, name)
    raise ValueError(f"{source} returned an item without {name!r}: {item!r:.120}")


def to_objective(item: Any, source: str) -> Objective:
    """An Objective from any object or mapping with id, text and category."""
    category = _field(item, "category", source)
    return Objective(str(_field(item, "id", source)), str(_field(item, "text", source)),
                     str(category) if category else "uncategorized")


def to_template(item: Any, source: str) -> JailbreakTemplate:
    """A JailbreakTemplate from a (name, text) pair or an object with name and text."""
    if isinstance(item, (tuple, list)) and len(item) == 2:
        return JailbreakTemplate(str(item[0]), str(item[1]))
    return JailbreakTemplate(str(_field(item, "name", source)), str(_field(item, "text", source)))


def load_inputs(families: Sequence[str], split: str, with_benign: bool
                ) -> tuple[list[Objective], list[Objective], AttackResources]:
    """Objectives, benign prompts and the resources the chosen families need, from temper.safety.data."""
    from temper.safety.data import (
        benign_edgy_prompts,
        injection_documents,
        jailbreak_templates,
        many_shot_examples,
        redteam_objectives,
    )

    objectives = [to_objective(o, "redteam_objectives") for o in redteam_objectives(split)]
    benign = [to_objective(o, "benign_edgy_prompts") for o in benign_edgy_prompts(split)] if with_benign else []
    resources = AttackResources()
    if "jailbreak" in families:
        resources.jailbreak_templates = [to_template(t, "jailbreak_templates") for t in jailbreak_templates(split)]
    if "many_shot" in families:
        resources.many_shot_examples = [(str(q), str(a)) for q, a in many_shot_examples()]
    if "injection" in families:
        resources.documents = [str(d) for d in injection_documents()]
    if not objectives:
        raise ValueError(f"redteam_objectives({split!r}) returned no objectives")
    return objectives, benign, resources


def _pct(x: float | None) -> str:
    return "    -" if x is None else f"{100 * x:5.1f}"


def format_table(summary: Mapping[str, Any]) -> str:
    """One plain-text table: ASR per family, overall, and over-refusal, with 95% CIs."""
    rows = [("family", "n", "succ", "ASR %", "95% CI %", "blocked", "errors")]
    groups = [*summary["families"].items(), ("OVERALL", summary["overall"])]
    for name, g in groups:
        rows.append((name, str(g["n"]), str(g["successes"]), _pct(g["asr"]),
                     f"{100 * g['ci'][0]:.1f}-{100 * g['ci'][1]:.1f}", str(g["blocked"]), str(g["errors"])))
    over = summary.get("over_refusal")
    if over:
        rows.append(("over-refusal", str(over["n"]), str(over["refused"]), _pct(over["rate"]),
                     f"{100 * over['ci'][0]:.1f}-{100 * over['ci'][1]:.1f}", str(over["blocked"]),
                     str(over["errors"])))
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    return "\n".join("  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(r, widths)))
                     for r in rows)


def final_line(model: str, summary: Mapping[str, Any]) -> str:
    """The machine-readable last line: ASR per family, overall ASR and over-refusal."""
    over = summary.get("over_refusal")
    return json.dumps({"model": model, "asr": {f: g["asr"] for f, g in summary["families"].items()},
                       "overall_asr": summary["overall"]["asr"], "over_refusal": over["rate"] if over else None})


def run(args: argparse.Namespace) -> int:
    """Run `temper redteam` from parsed arguments; 0 when done, 1 when no request got a reply."""
    from temper.safety.redteam.harness import RedTeamConfig, run_redteam
    from temper.safety.redteam.report import write_reports

    config = RedTeamConfig(target=args.target, model=args.model, api_key=args.api_key, families=args.attacks,
                           max_objectives=args.max_objectives, concurrency=args.concurrency,
                           max_tokens=args.max_tokens, temperature=args.temperature, seed=args.seed,
                           timeout_s=args.timeout, retries=args.retries, output_dir=args.output or "",
                           overwrite=args.overwrite, progress=not args.no_progress)
    objectives, benign, resources = load_inputs(config.families, args.split, not args.no_benign)
    from temper.safety.judges import load_judge

    outcome = run_redteam(config, objectives, resources, load_judge(), benign)
    report_config = {**config.fingerprint(), "split": args.split, "concurrency": config.concurrency,
                     "benign_prompts": len(benign)}
    paths = write_reports(outcome.summary, outcome.results, config.output_dir, f"temper redteam: {config.model}",
                          report_config)
    print(format_table(outcome.summary))
    print(f"sent {outcome.sent} requests ({outcome.skipped} already done)")
    for name, path in [("results", config.output_dir / "results.jsonl"), *paths.items()]:
        print(f"{name}: {path}")
    errors = sum(1 for r in outcome.results if r.get("error"))
    if errors:
        print(f"temper redteam: {errors} requests failed; rerun the same command to retry them", file=sys.stderr)
    print(final_line(config.model, outcome.summary))
    return 1 if outcome.results and errors == len(outcome.results) else 0
