"""`temper gateway`: run the gateway, or show spend from its store."""
from __future__ import annotations

import argparse
import json
import sys


def add_parser(sub: argparse._SubParsersAction) -> argparse.ArgumentParser:
    p = sub.add_parser("gateway", help="an OpenAI-compatible gateway over several back ends: routing, caching, "
                                       "cost tracking, budgets and rate limits",
                       description="Front several OpenAI-compatible back ends (temper servers, llama.cpp, hosted "
                                   "APIs) as one API. See examples/gateway.yaml and docs/gateway.md.")
    p.add_argument("action", nargs="?", choices=("serve", "spend", "check", "train-verifier"), default="serve",
                   help="serve (default); spend: print spend per key, team and model from the gateway's store; "
                        "check: validate the config and probe each back end once; train-verifier: train the "
                        "semantic cache's pair verifier now (else it trains on first use; ~8 min on 2 cores)")
    p.add_argument("-c", "--config", metavar="YAML", help="the gateway's configuration (all actions but "
                                                           "train-verifier)")
    p.add_argument("--host", default=None, help="address to bind (default: the config's, else 127.0.0.1)")
    p.add_argument("--port", type=int, default=None, help="port (default: the config's, else 4000)")
    p.add_argument("--json", action="store_true", help="spend/check: machine-readable output")
    p.add_argument("--http", choices=("auto", "httptools", "h11"), default="auto",
                   help="uvicorn's HTTP parser (auto: httptools when installed, it is the faster)")
    p.add_argument("--loop", choices=("auto", "uvloop", "asyncio"), default="auto",
                   help="the event loop (auto: uvloop when installed, it is the faster)")
    return p


def run(args: argparse.Namespace) -> int:
    import asyncio

    from temper.gateway.config import load_config

    if args.action == "train-verifier":
        return _train_verifier()
    if not args.config:
        print("temper gateway: --config YAML is required (see examples/gateway.yaml)", file=sys.stderr)
        return 2
    config = load_config(args.config)
    if args.action == "spend":
        return asyncio.run(_spend(config, args.json))
    if args.action == "check":
        return asyncio.run(_check(config, args.json))
    return _serve(config, args)


def _serve(config, args) -> int:
    import logging

    import uvicorn

    from temper.gateway.app import create_gateway

    host = args.host or config.listen.host
    port = config.listen.port if args.port is None else args.port
    log = logging.getLogger("temper.gateway")
    if host not in ("127.0.0.1", "localhost", "::1") and not config.keys:
        log.warning("gateway on %s without API keys: anyone who can reach the port can spend your budget", host)
    logging.getLogger("temper.gateway").setLevel(logging.INFO)
    logging.getLogger("temper.gateway.requests").setLevel(logging.INFO)
    app = create_gateway(config)
    print(f"temper gateway: {len(config.backends)} back ends, models {', '.join(config.models)}"
          f"{'; routes ' + ', '.join(config.routes) if config.routes else ''}; OpenAI-compatible API on "
          f"http://{host}:{port}/v1", file=sys.stderr)
    uvicorn.Server(uvicorn.Config(app, host=host, port=port, access_log=False, log_config=None,
                                  timeout_keep_alive=30, http=args.http, loop=args.loop)).run()
    return 0


def _train_verifier() -> int:
    import logging

    from temper.gateway.verifier import PairVerifier, default_path

    logging.getLogger("temper.gateway").setLevel(logging.INFO)
    path = default_path()
    PairVerifier.load_or_train(path)
    print(f"pair verifier ready in {path}", file=sys.stderr)
    return 0


async def _spend(config, as_json: bool) -> int:
    from temper.gateway.store import open_state

    state = open_state(config.cache.store)
    try:
        rows = await state.spend_rows()
        budgets = {}
        for k in config.keys:
            if k.budget_usd is not None:
                budgets[f"key:{k.name}"] = (k.budget_usd, await state.spent(f"key:{k.name}"))
        for team, t in config.teams.items():
            if t.budget_usd is not None:
                budgets[f"team:{team}"] = (t.budget_usd, await state.spent(f"team:{team}"))
    finally:
        await state.close()
    if as_json:
        print(json.dumps({"rows": rows, "budgets": {k: {"budget_usd": b, "spent_usd": s}
                                                    for k, (b, s) in budgets.items()}}))
        return 0
    print(f"{'key':<16} {'team':<12} {'model':<24} {'requests':>9} {'prompt tok':>11} {'output tok':>11} "
          f"{'USD':>12}")
    for r in rows:
        print(f"{r['key']:<16} {r['team']:<12} {r['model']:<24} {r['requests']:>9} {r['prompt_tokens']:>11} "
              f"{r['completion_tokens']:>11} {r['cost_usd']:>12.6f}")
    print(f"{'total':<54} {sum(r['requests'] for r in rows):>9} {'':>11} {'':>11} "
          f"{sum(r['cost_usd'] for r in rows):>12.6f}")
    for scope, (budget, spent) in budgets.items():
        print(f"budget {scope}: ${spent:.6f} of ${budget:.6f} ({100 * spent / budget if budget else 100:.1f}%)")
    return 0


async def _check(config, as_json: bool) -> int:
    from temper.gateway.backends import Backends

    backends = Backends(config)
    try:
        await backends.check_all()
        result = {r.name: {"model": r.model, "url": r.config.url, "healthy": r.healthy, "error": r.last_error,
                           "price_per_million": dict(zip(("input", "output"), r.config.price.per_million()))}
                  for r in backends.all()}
    finally:
        await backends.aclose()
    if as_json:
        print(json.dumps(result))
    else:
        for name, r in result.items():
            p = r["price_per_million"]
            print(f"{name:<16} {r['model']:<20} {'up' if r['healthy'] else 'DOWN':<5} {r['url']:<32} "
                  f"${p['input']:.4f} / ${p['output']:.4f} per M tokens{'  ' + r['error'] if r['error'] else ''}")
        if (status := _verifier_status(config)) is not None:
            print(status)
    return 0 if all(r["healthy"] for r in result.values()) else 1


def _verifier_status(config) -> str | None:
    """Whether the semantic cache's pair verifier is trained, so that a first start's training is no surprise."""
    s = config.cache.semantic
    if not s.enabled or s.verifier == "none":
        return None
    from pathlib import Path

    from temper.gateway.verifier import default_path

    path = Path(s.verifier_path).expanduser() if s.verifier_path else default_path()
    if (path / "model.safetensors").is_file():
        return f"semantic cache: pair verifier trained ({path})"
    return ("semantic cache: the pair verifier is not trained yet; the gateway's first start trains it (~8 min on 2 "
            "cores): run `temper gateway train-verifier` now to have it ready")
