"""What each `temper` subcommand does (argument parsing lives in cli.py)."""
from __future__ import annotations

import argparse
import json
import logging
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import torch

from temper.engine.config import EngineConfig
from temper.engine.llm_engine import LLMEngine
from temper.engine.outputs import RequestOutput
from temper.engine.sampling_params import SamplingParams
from temper.errors import ContextLengthExceededError, TemperError
from temper.models.loader import LoadedModel, load
from temper.models.registry import REGISTRY, installed_size, resolve

log = logging.getLogger(__name__)


def pick_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise TemperError(f"--device {name}: CUDA is not available on this machine; use --device cpu")
    return device


def pick_dtype(name: str, device: torch.device) -> torch.dtype:
    if name == "auto":
        # NOTE: CPUs without native bf16 run bf16 matmuls ~100x slower than fp32 (DESIGN.md)
        return torch.bfloat16 if device.type == "cuda" else torch.float32
    return getattr(torch, name)


def load_model(args: argparse.Namespace) -> LoadedModel:
    device = pick_device(args.device)
    loaded = load(resolve(args.model), device=device, dtype=pick_dtype(args.dtype, device),
                  quantization=getattr(args, "quantization", None))
    if getattr(args, "stats", False):
        print(f"[loaded {loaded.config.name or args.model} ({loaded.config.arch}) on {device} "
              f"in {loaded.load_seconds:.2f} s]", file=sys.stderr)
    return loaded


def sampling_params(args: argparse.Namespace) -> SamplingParams:
    """The user's flags, then the registered model's recommended settings, then SamplingParams' defaults."""
    spec = REGISTRY.get(args.model)
    chosen = dict(spec.sampling_defaults) if spec else {}
    chosen.update({k: v for k in ("temperature", "top_p", "top_k") if (v := getattr(args, k)) is not None})
    params = SamplingParams(max_tokens=args.max_tokens, seed=args.seed, stop=tuple(args.stop), **chosen)
    log.info("sampling: %s", params)
    return params


def make_engine(args: argparse.Namespace) -> LLMEngine:
    loaded = load_model(args)
    memory = None if args.kv_cache_memory is None else int(args.kv_cache_memory * 2**30)
    return LLMEngine(loaded.model, loaded.tokenizer, EngineConfig(kv_cache_memory=memory))


def stream(engine: LLMEngine, prompt_ids: list[int], params: SamplingParams) -> Iterator[str | RequestOutput]:
    """Text deltas of one request as the engine produces them, then its final RequestOutput."""
    request_id = engine.add_request(prompt_ids, params)
    sent = 0
    try:
        while True:
            for out in engine.step():
                text = out.outputs[0].text
                if len(text) > sent:
                    yield text[sent:]
                    sent = len(text)
                if out.finished:
                    yield out
                    return
    finally:
        engine.abort(request_id)  # Ctrl-C or a broken pipe: free the blocks at once


def print_stats(out: RequestOutput) -> None:
    m, completion = out.metrics, out.outputs[0]
    n = len(completion.token_ids)
    decode = (n - 1) / (m.finished_time - m.first_token_time) if n > 1 and m.finished_time > m.first_token_time else 0
    print(f"[{len(out.prompt_token_ids)} prompt tokens ({out.num_cached_tokens} cached), {n} generated "
          f"({completion.finish_reason}); TTFT {m.ttft * 1000:.0f} ms; decode {decode:.1f} tokens/s]", file=sys.stderr)


def run_and_print(engine: LLMEngine, prompt_ids: list[int], params: SamplingParams, show_stats: bool) -> str:
    """Stream one completion to stdout; return its text."""
    parts = []
    for item in stream(engine, prompt_ids, params):
        if isinstance(item, str):
            parts.append(item)
            sys.stdout.write(item)
            sys.stdout.flush()
        elif show_stats:
            sys.stdout.write("\n")
            print_stats(item)
            return "".join(parts)
    sys.stdout.write("\n")
    return "".join(parts)


def cmd_models(args: argparse.Namespace) -> int:
    rows = []
    for spec in REGISTRY.values():
        size = installed_size(spec)
        rows.append({"name": spec.name, "installed": size is not None, "size_mb": round((size or 0) / 1e6),
                     "architecture": spec.architecture, "params": spec.params, "license": spec.license,
                     "description": spec.description, "install": spec.install_hint()})
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    print(f"{'NAME':24} {'INSTALLED':9} {'SIZE':>7} {'ARCH':7} {'PARAMS':6} {'LICENSE':19} DESCRIPTION")
    for r in rows:
        size = f"{r['size_mb']} MB" if r["installed"] else "-"
        print(f"{r['name']:24} {'yes' if r['installed'] else 'no':9} {size:>7} {r['architecture']:7} "
              f"{r['params']:6} {r['license']:19} {r['description']}")
    for r in rows:
        if not r["installed"]:
            print(f"install {r['name']}: {r['install']}", file=sys.stderr)
    return 0


def cmd_generate(args: argparse.Namespace) -> int:
    prompt = sys.stdin.read() if args.prompt == "-" else args.prompt
    params = sampling_params(args)
    engine = make_engine(args)
    tok = engine.tokenizer
    use_chat = args.format == "chat" or (args.format == "auto" and tok.chat_template is not None)
    if use_chat:
        messages = ([{"role": "system", "content": args.system}] if args.system else [])
        ids = tok.apply_chat_template(messages + [{"role": "user", "content": prompt}], tokenize=True)
    else:
        ids = tok.encode(prompt)
    run_and_print(engine, ids, params, args.stats)
    return 0


def cmd_chat(args: argparse.Namespace) -> int:
    params = sampling_params(args)
    engine = make_engine(args)
    tok, context = engine.tokenizer, engine.max_model_len
    system = [{"role": "system", "content": args.system}] if args.system else []
    history: list[dict[str, str]] = []
    interactive = sys.stdin.isatty()
    if interactive:
        print(f"chatting with {args.model}; /reset clears the history, /exit or Ctrl-D quits", file=sys.stderr)
    while True:
        try:
            line = input("> " if interactive else "")
        except EOFError:
            return 0
        if not line.strip():
            continue
        if line.strip() == "/exit":
            return 0
        if line.strip() == "/reset":
            history.clear()
            print("[history cleared]", file=sys.stderr)
            continue
        history.append({"role": "user", "content": line})
        ids = tok.apply_chat_template(system + history, tokenize=True)
        while len(ids) + params.max_tokens > context and len(history) > 1:
            del history[:2]  # forget the oldest exchange rather than fail
            print("[context full: dropped the oldest exchange]", file=sys.stderr)
            ids = tok.apply_chat_template(system + history, tokenize=True)
        try:
            reply = run_and_print(engine, ids, params, args.stats)
        except ContextLengthExceededError as e:
            history.pop()
            print(f"[{e}]", file=sys.stderr)
            continue
        history.append({"role": "assistant", "content": reply})



def api_keys(args: argparse.Namespace) -> tuple[str, ...]:
    """Keys from --api-key flags, the TEMPER_API_KEY variable (comma-separated) and --api-key-file (a key a
    line, # comments)."""
    import os

    keys = list(args.api_key or [])
    keys += [k.strip() for k in os.environ.get("TEMPER_API_KEY", "").split(",") if k.strip()]
    if args.api_key_file:
        try:
            lines = Path(args.api_key_file).read_text(encoding="utf-8").splitlines()
        except OSError as e:
            raise TemperError(f"--api-key-file {args.api_key_file}: {e.strerror}") from e
        keys += [k.strip() for k in lines if k.strip() and not k.lstrip().startswith("#")]
    return tuple(dict.fromkeys(keys))


def cmd_serve(args: argparse.Namespace) -> int:
    import uvicorn

    from temper.engine.async_engine import AsyncLLMEngine
    from temper.server.app import Backend, ServerConfig, create_app

    resolve(args.model)  # an unknown model fails here, before the port is bound
    if args.guard:  # so does a bad policy file
        from temper.safety.policy import load_policy
        policy = load_policy(args.guard)
    keys = api_keys(args)
    if args.host not in ("127.0.0.1", "localhost", "::1") and not keys:
        log.warning("serving on %s without API keys: anyone who can reach the port can use it", args.host)
    name = args.served_model_name or args.model
    spec = REGISTRY.get(args.model)
    config = EngineConfig(max_num_seqs=args.max_num_seqs, max_num_batched_tokens=args.max_num_batched_tokens,
                          kv_cache_memory=None if args.kv_cache_memory is None else int(args.kv_cache_memory * 2**30),
                          max_model_len=args.max_model_len, enable_prefix_caching=not args.no_prefix_caching,
                          attention_backend=args.attention_backend, cpu_decode_max_batch=args.cpu_decode_max_batch)

    def loader() -> Backend:
        loaded = load_model(args)
        engine = AsyncLLMEngine(LLMEngine(loaded.model, loaded.tokenizer, config))
        log.info("model %s loaded in %.2f s; KV cache %d blocks of %d tokens", name, loaded.load_seconds,
                 engine.engine.runner.num_blocks, config.block_size)
        embedder = None
        if not args.no_embeddings:
            from temper.embeddings import Embedder
            try:
                embedder = Embedder.load()
            except TemperError as e:
                log.warning("no /v1/embeddings: %s", e)
        guard = None
        if args.guard:
            from temper.safety.guard import Guard
            guard = Guard(policy)
            log.info("guard: policy %s (input: %s; output: %s)", policy.source,
                     ", ".join(c.check for c in policy.input) or "-", ", ".join(c.check for c in policy.output) or "-")
        rag = None
        if embedder is not None:
            from temper.rag.store import default_store_uri, open_store
            from temper.server.rag import RAGService
            try:
                uri = args.rag_store or default_store_uri()
                rag = RAGService(open_store(uri), embedder, guard)
                log.info("RAG: store %s (%s)", uri.split("@")[-1],
                         ", ".join(f"{c.name}: {c.num_chunks} chunks" for c in rag.store.collections()) or
                         "no collections yet: `temper rag ingest PATH --collection NAME`")
            except TemperError as e:
                log.warning("no RAG endpoints: %s", e)
        return Backend(engine, name, dict(spec.sampling_defaults) if spec else {}, embedder, guard, rag)

    server_config = ServerConfig(api_keys=keys, max_queued=args.max_queued,
                                 request_timeout=args.request_timeout or None)
    server: uvicorn.Server | None = None

    def failed(e: BaseException) -> None:
        if server is not None:
            server.should_exit = True

    app = create_app(server_config, loader, on_load_error=failed)
    server = uvicorn.Server(uvicorn.Config(app, host=args.host, port=args.port, access_log=False, log_config=None,
                                           timeout_graceful_shutdown=args.shutdown_timeout,
                                           timeout_keep_alive=30))
    print(f"temper serve: loading {name}; the OpenAI-compatible API will answer on http://{args.host}:{args.port}/v1 "
          f"(/health turns 200 when ready){' with API keys' if keys else ''}", file=sys.stderr)
    server.run()
    error = app.state.temper.load_error
    if error:
        raise TemperError(f"the model failed to load: {error}")
    return 0


def cmd_plan(args: argparse.Namespace) -> int:
    from temper import plan

    print(plan.report(args))
    return 0


def cmd_quantize(args: argparse.Namespace) -> int:
    from pathlib import Path

    from temper.quant.config import QuantConfig
    from temper.quant.quantize import quantize_checkpoint

    config = QuantConfig(method=args.method, group_size=args.group_size, symmetric=args.symmetric,
                         head_bits=args.head_bits)
    report = quantize_checkpoint(resolve(args.model), Path(args.output), config, args.calibration_samples,
                                 args.calibration_seq_len, args.seed, args.eval_tokens, args.force)
    print("\n".join(report.lines()))
    return 0


def cmd_align(args: argparse.Namespace) -> int:
    import json

    from temper.align.recipe import read_recipe, run

    recipe = read_recipe(args.config, args.set)
    for key, value in (("model", args.model), ("output_dir", args.output_dir), ("max_steps", args.max_steps),
                       ("resume", args.resume)):
        if value is not None:
            recipe[key] = value
    if args.stage == "cai":
        from temper.align.cai import config_from_recipe, run_cai

        if recipe.get("stage", "cai") != "cai":
            raise SystemExit(f"error: this recipe is for `temper align {recipe['stage']}`, not cai")
        recipe.pop("max_steps", None)
        recipe.pop("resume", None)
        try:
            config = config_from_recipe(recipe)
        except (TypeError, ValueError) as e:
            raise SystemExit(f"error: {e}") from None
        summary = run_cai(config)
        print(json.dumps({"final_model": summary["final_model"], "stages": summary["stages"],
                          "eval": summary.get("eval"), "timings_s": summary["timings_s"]}, default=str))
        return 0
    result = run(args.stage, recipe)
    print(json.dumps(result, default=str))
    return 0


COMMANDS: dict[str, Callable[[argparse.Namespace], int]] = {
    "models": cmd_models, "generate": cmd_generate, "chat": cmd_chat, "serve": cmd_serve, "quantize": cmd_quantize,
    "plan": cmd_plan, "align": cmd_align, "safety": lambda a: _lazy("temper.safety.cli", a),
    "redteam": lambda a: _lazy("temper.safety.redteam.cli", a), "rag": lambda a: _lazy("temper.rag.cli", a),
    "gateway": lambda a: _lazy("temper.gateway.cli", a), "prompts": lambda a: _lazy("temper.prompts.cli", a),
    "eval": lambda a: _lazy("temper.eval.runner", a), "pipeline": lambda a: _lazy("temper.eval.pipeline", a),
    "report": lambda a: _lazy("temper.eval.report", a)}


def _lazy(module: str, args: argparse.Namespace) -> int:
    """Run a subsystem's CLI, importing it only when asked for."""
    import importlib
    return importlib.import_module(module).run(args)
