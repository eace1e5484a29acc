"""`temper prompts {render,eval}`: render a registered template; compare prompting strategies on a data set."""
from __future__ import annotations

import argparse
import json
import sys
from dataclasses import asdict

from temper.errors import TemperError


def add_parser(sub: argparse._SubParsersAction, add_model_args) -> argparse.ArgumentParser:
    p = sub.add_parser("prompts", help="prompt templates, and accuracy/tokens/time of prompting strategies")
    ps = p.add_subparsers(dest="prompts_command", required=True)

    q = ps.add_parser("render", help="render a template from YAML files")
    q.add_argument("paths", nargs="+", help="YAML files or folders of templates")
    q.add_argument("--name", required=True, help="the template's name")
    q.add_argument("--version", type=int, default=None, help="the template's version (default: the latest)")
    q.add_argument("--var", action="append", default=[], metavar="NAME=VALUE", help="a variable (repeatable)")

    q = ps.add_parser("eval", help="run strategies over a JSONL data set of question/answer and print a table")
    add_model_args(q)
    q.add_argument("--data", required=True, help="JSONL with `question` and `answer` (a number or '... #### N')")
    q.add_argument("--strategies", default="direct,cot", help="comma-separated: direct, fewshot, cot, fewshot-cot, sc5, sc10 "
                                                              "(default: direct,cot)")
    q.add_argument("--limit", type=int, default=None, help="the first N items only (after the --shots examples)")
    q.add_argument("--shots", type=int, default=4, help="fewshot, fewshot-cot: the data's first K rows are the worked "
                                                        "examples and are not evaluated (default 4)")
    q.add_argument("--max-tokens", type=int, default=256, help="reasoning tokens per path (default 256)")
    q.add_argument("--price-per-hour", type=float, default=0.0, metavar="USD",
                   help="the machine's price per hour: adds the cost of 1,000 questions at the measured time")
    q.add_argument("--json", action="store_true", help="print one JSON line per strategy instead of the table")
    return p


def run(args: argparse.Namespace) -> int:
    try:
        return _render(args) if args.prompts_command == "render" else _eval(args)
    except (TemperError, ValueError, OSError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1


def _render(args: argparse.Namespace) -> int:
    from temper.prompts.templates import PromptRegistry

    values = {}
    for item in args.var:
        name, sep, value = item.partition("=")
        if not sep:
            raise ValueError(f"--var takes NAME=VALUE, got {item!r}")
        values[name] = value
    rendered = PromptRegistry.from_paths(*args.paths).get(args.name, args.version).render(**values)
    print(rendered if isinstance(rendered, str) else json.dumps(rendered, ensure_ascii=False, indent=2))
    return 0


def _eval(args: argparse.Namespace) -> int:
    from temper.commands import load_model
    from temper.engine.llm import LLM
    from temper.prompts.evaluate import evaluate, format_table, load_items

    rows = load_items(args.data, None if args.limit is None else args.limit + args.shots)
    shots, items = rows[:args.shots], rows[args.shots:]
    strategies = [s.strip() for s in args.strategies.split(",") if s.strip()]
    llm = LLM.from_loaded(load_model(args), args.model)
    reports = evaluate(llm, items, strategies, max_tokens=args.max_tokens, shots=shots)
    if args.json:
        for r in reports:
            print(json.dumps({"model": args.model, **asdict(r),
                              "usd_per_1k_questions": r.seconds_per_item * args.price_per_hour / 3600 * 1000}))
    else:
        print(f"{args.model} on {args.data} ({len(items)} items)")
        print(format_table(reports, args.price_per_hour))
    return 0
