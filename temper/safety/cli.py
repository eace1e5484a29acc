"""`temper safety {train,eval,check}`: the guard's classifiers from the command line."""
from __future__ import annotations

import argparse
import json
import sys
from dataclasses import asdict


def add_parser(sub: argparse._SubParsersAction) -> argparse.ArgumentParser:
    p = sub.add_parser("safety", help="train, evaluate or try the guard's classifiers (harm, attack, PII, refusal)",
                       description="The guard behind `temper serve --guard`: `train` fits its classifiers from the "
                                   "offline data (about 7 minutes on a 2-core CPU, once), `eval` prints their held-out "
                                   "precision, recall, false positives and latency, `check` runs a policy on a text.")
    ss = p.add_subparsers(dest="safety_command", required=True)
    t = ss.add_parser("train", help="fit the harm, attack and category heads on MiniLM embeddings")
    t.add_argument("-o", "--output", default=None, help="folder to write (default: the temper cache)")
    t.add_argument("--sharegpt", type=int, default=3000,
                   help="ShareGPT prompts in the benign side (0: none; its licence is unclear, so a head trained "
                        "with it is for local use)")
    t.add_argument("--seed", type=int, default=0)
    e = ss.add_parser("eval", help="held-out metrics and CPU latency of every check")
    e.add_argument("--models", default=None, help="folder of trained heads (default: the cache)")
    e.add_argument("-o", "--output", default=None, help="also write the results as JSON")
    c = ss.add_parser("check", help="run a guard policy on a message (and optionally a reply)")
    c.add_argument("text", help="the user message ('-': read stdin)")
    c.add_argument("--reply", default=None, help="a model reply to run the output checks on")
    c.add_argument("--policy", default="default", help="YAML policy or 'default'")
    return p


def run(args: argparse.Namespace) -> int:
    if args.safety_command == "train":
        from temper.safety.classifiers import train
        folder = train(args.output, sharegpt=args.sharegpt, seed=args.seed)
        print(f"guard classifiers written to {folder}")
        print((folder / "meta.json").read_text())
        return 0
    if args.safety_command == "eval":
        from temper.safety import evaluate
        argv = (["--models", args.models] if args.models else []) + (["-o", args.output] if args.output else [])
        return evaluate.main(argv)
    from temper.safety.guard import Guard
    guard = Guard.from_policy(args.policy)
    text = sys.stdin.read() if args.text == "-" else args.text
    decision = guard.check_input([{"role": "user", "content": text}])
    out = {"blocked": decision.blocked, "message": decision.message,
           "sent_to_model": decision.messages[0]["content"],
           "verdicts": [asdict(v) for v in decision.verdicts]}
    if args.reply is not None:
        reply = guard.check_output(args.reply, decision)
        out["reply"] = {"blocked": reply.blocked, "text": reply.text,
                        "verdicts": [asdict(v) for v in reply.verdicts]}
    print(json.dumps(out, indent=2, default=str))
    return 0
