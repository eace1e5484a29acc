"""The `temper` command line: models, generate, chat, serve, plan, quantize, align, safety, redteam."""
from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence

from temper.engine.sampling_params import SamplingParams
from temper.errors import TemperError

DTYPES = ("auto", "float32", "bfloat16", "float16")
QUANTIZATION_CHOICES = ("gguf", "int8", "int4")


def _add_model_args(p: argparse.ArgumentParser) -> None:
    from temper.models.registry import DEFAULT_MODEL

    p.add_argument("-m", "--model", default=DEFAULT_MODEL,
                   help=f"registered name (see `temper models`), a .gguf file or an HF folder (default: {DEFAULT_MODEL})")
    p.add_argument("--device", default="auto", help="cpu, cuda, cuda:N, or auto (cuda when available)")
    p.add_argument("--dtype", default="auto", choices=DTYPES, help="auto: float32 on CPU, bfloat16 on CUDA")
    p.add_argument("--kv-cache-memory", type=float, default=None, metavar="GIB",
                   help="GiB for the paged KV cache (default: a share of the available memory)")
    p.add_argument("--quantization", choices=QUANTIZATION_CHOICES, default=None,
                   help="gguf: keep a GGUF file's 4/8-bit blocks as int4/int8 layers (no float copy); int8, int4: "
                        "round-to-nearest at load (calibrated int4: `temper quantize`). Default: as stored "
                        "(a quantized folder stays quantized, a GGUF file is dequantized)")


def _add_sampling_args(p: argparse.ArgumentParser, max_tokens: int) -> None:
    d = SamplingParams()
    unset = "default: the model's recommended setting, else {}"
    p.add_argument("--max-tokens", type=int, default=max_tokens, help="most new tokens to generate")
    p.add_argument("--temperature", type=float, default=None, help="0 is greedy; " + unset.format(d.temperature))
    p.add_argument("--top-p", type=float, default=None, help=unset.format(d.top_p))
    p.add_argument("--top-k", type=int, default=None, help="0 keeps all tokens; " + unset.format(d.top_k))
    p.add_argument("--seed", type=int, default=None, help="fix the sampling for reproducible output")
    p.add_argument("--stop", action="append", default=[], help="stop string (repeatable)")
    p.add_argument("--stats", action="store_true", help="print load time, TTFT and tokens/s to stderr")


def _add_plan_parser(sub: argparse._SubParsersAction) -> None:
    from temper import plan
    from temper.models.registry import DEFAULT_MODEL

    d, fmt = plan.PlanConfig(), plan.WeightFormat()
    p = sub.add_parser("plan", help="memory, throughput and cost of a model on a device, before you buy it")
    p.add_argument("-m", "--model", default=DEFAULT_MODEL,
                   help=f"a preset ({', '.join(plan.MODEL_PRESETS)}), an HF config.json or its folder, a .gguf "
                        f"file or a registered model (default: {DEFAULT_MODEL})")
    p.add_argument("--bits", type=int, choices=plan.BITS, default=None,
                   help="weight format: 32 fp32, 16 fp16/bf16, 8 int8 per-row, 4 int4 group-wise "
                        "(default: a table of all four)")
    p.add_argument("--group-size", type=int, default=fmt.group_size,
                   help=f"int4: weights per scale (default: {fmt.group_size})")
    p.add_argument("--symmetric", action="store_true", help="int4: scales only, no zero points")
    p.add_argument("--head-bits", type=int, choices=(0, 4, 8), default=0,
                   help="8/4 bits: embedding and lm_head in int8 (8) or int4 (4) too, as `temper quantize "
                        "--head-bits` stores them; 0 keeps them 16-bit (default)")
    p.add_argument("--kv-dtype", choices=tuple(plan.KV_DTYPE_BYTES), default=d.kv_dtype,
                   help=f"KV cache element type (default: {d.kv_dtype})")
    p.add_argument("--gpu", default=None, metavar="NAME",
                   help=f"a device preset: {', '.join(plan.DEVICES)} (default: {plan.DEFAULT_DEVICE})")
    p.add_argument("--num-gpus", type=int, default=d.num_gpus, help=f"tensor-parallel devices (default: {d.num_gpus})")
    p.add_argument("--memory-gb", type=float, default=None, help="memory of one device, GB (a custom device or "
                                                                  "your RAM size with --gpu cpu)")
    p.add_argument("--bandwidth-gbs", type=float, default=None, help="memory bandwidth of one device, GB/s")
    p.add_argument("--tflops", type=float, default=None, help="peak dense fp16/bf16 TFLOP/s of one device")
    p.add_argument("--price-per-hour", type=float, default=None, help="USD per device-hour (default: the preset's "
                                                                       "assumed on-demand price)")
    p.add_argument("--context-len", type=int, default=d.context_len,
                   help=f"tokens (prompt + output) each sequence keeps in the KV cache (default: {d.context_len})")
    p.add_argument("--gpu-memory-utilization", type=float, default=d.gpu_memory_utilization,
                   help=f"share of device memory to use, as in vLLM (default: {d.gpu_memory_utilization})")
    p.add_argument("--bandwidth-efficiency", type=float, default=d.bandwidth_efficiency,
                   help=f"share of peak bandwidth a decode step achieves (default: {d.bandwidth_efficiency})")
    p.add_argument("--mfu", type=float, default=d.mfu,
                   help=f"share of peak FLOP/s a matmul achieves (default: {d.mfu})")
    p.add_argument("--json", action="store_true", help="machine-readable output")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="temper", description="From a base LLM to a production endpoint.")
    parser.add_argument("-v", "--verbose", action="store_true", help="log what happens")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("models", help="list the packaged models, installed or not")
    p.add_argument("--json", action="store_true", help="machine-readable output")

    p = sub.add_parser("generate", help="generate text from a prompt")
    _add_model_args(p)
    p.add_argument("prompt", nargs="?", default="-", help="the prompt, or - to read it from stdin")
    p.add_argument("--format", choices=("auto", "chat", "raw"), default="auto",
                   help="chat: send the prompt as a user message through the chat template; raw: continue the "
                        "text; auto: chat when the model ships a chat template")
    p.add_argument("--system", default=None, help="system message (chat format)")
    _add_sampling_args(p, max_tokens=256)

    p = sub.add_parser("serve", help="serve the model through the OpenAI-compatible HTTP API")
    _add_model_args(p)
    p.add_argument("--host", default="127.0.0.1", help="address to bind (default: loopback only)")
    p.add_argument("--port", type=int, default=8000)
    p.add_argument("--api-key", action="append", default=[], metavar="KEY",
                   help="accept this key as 'Authorization: Bearer KEY' (repeatable; also TEMPER_API_KEY, "
                        "comma-separated, and --api-key-file)")
    p.add_argument("--api-key-file", default=None, metavar="PATH", help="file with one API key a line")
    p.add_argument("--served-model-name", default=None, help="model id clients send (default: --model)")
    p.add_argument("--max-num-seqs", type=int, default=128, help="most sequences in one engine step")
    p.add_argument("--max-num-batched-tokens", type=int, default=512, help="token budget of one engine step")
    p.add_argument("--max-model-len", type=int, default=None, help="context limit (default: the model's)")
    p.add_argument("--no-prefix-caching", action="store_true", help="turn the prefix cache off")
    p.add_argument("--attention-backend", choices=("auto", "torch", "triton", "cpu"), default="auto",
                   help="decode attention: auto (default) picks the Triton kernel on CUDA and the C kernel for "
                        "fp32 on the CPU (built on first use with the system's C compiler), else torch")
    p.add_argument("--cpu-decode-max-batch", type=int, default=16, metavar="N",
                   help="on the CPU, decode-only steps of up to N sequences run as one C call (Llama-family and "
                        "Gemma 3 models); 0 keeps every step on PyTorch (default: 16)")
    p.add_argument("--max-queued", type=int, default=512,
                   help="requests allowed to wait beyond the running batch; more get 429 (default: 512)")
    p.add_argument("--request-timeout", type=float, default=600.0, metavar="S",
                   help="abort a request still running after S seconds (0: never; default: 600)")
    p.add_argument("--shutdown-timeout", type=float, default=60.0, metavar="S",
                   help="on SIGTERM, wait up to S seconds for requests in flight (default: 60)")
    p.add_argument("--no-embeddings", action="store_true", help="do not load the embedding model")
    p.add_argument("--guard", default=None, metavar="POLICY",
                   help="input/output safety rails from a YAML policy, or 'default' (see docs/safety.md)")
    p.add_argument("--rag-store", default=None, metavar="URI",
                   help="RAG store for /v1/rag/query and the `rag` field of chat completions: a SQLite file or a "
                        "postgresql:// URL (default: $TEMPER_RAG_STORE or the store `temper rag ingest` writes)")
    p.add_argument("--stats", action="store_true", help=argparse.SUPPRESS)

    _add_plan_parser(sub)

    p = sub.add_parser("quantize", help="write a weight-only int8/int4 checkpoint that serve and generate load",
                       description="Quantize a model's block linears (and its head) and save an HF-style folder "
                                   "with a quantization_config; `temper serve --model DIR` loads it without a float "
                                   "copy of the weights.")
    p.add_argument("model", help="registered name, .gguf file or HF folder")
    p.add_argument("-o", "--output", required=True, help="folder to write")
    p.add_argument("--method", choices=("int8", "int4-rtn", "int4-gptq"), default="int4-gptq",
                   help="int8 per output channel, int4 round-to-nearest, or int4 GPTQ calibrated on the Python docs "
                        "(default: int4-gptq)")
    p.add_argument("--group-size", type=int, default=128, help="int4 inputs per scale: 32, 64, 128 or 256")
    p.add_argument("--symmetric", action="store_true", help="int4 grids centred on zero (no per-group min)")
    p.add_argument("--head-bits", type=int, choices=(0, 4, 8), default=8,
                   help="output head and embedding: 0 keeps them float, 8 int8 per row, 4 int4 (default: 8)")
    p.add_argument("--calibration-samples", type=int, default=64, help="GPTQ: windows of calibration text")
    p.add_argument("--calibration-seq-len", type=int, default=512, help="GPTQ: tokens per window")
    p.add_argument("--seed", type=int, default=0, help="GPTQ: which calibration windows")
    p.add_argument("--eval-tokens", type=int, default=0, metavar="N",
                   help="also measure perplexity on N held-out tokens before and after (0: skip)")
    p.add_argument("--force", action="store_true", help="overwrite a non-empty output folder")

    p = sub.add_parser("align", help="train a model: sft, rm (reward model), dpo, ppo, grpo or cai (Constitutional "
                                     "AI), from a YAML recipe",
                       description="Run one alignment stage. The recipe (YAML) names the model, the data and the "
                                   "trainer settings; flags override it. Writes checkpoints, metrics.jsonl, curves.png "
                                   "and the trained model (OUTPUT_DIR/model, servable with `temper serve --model`). "
                                   "Under torchrun, trains data-parallel (gloo on CPU, NCCL on GPU).")
    p.add_argument("stage", choices=("sft", "rm", "dpo", "ppo", "grpo", "cai"),
                   help="cai runs the whole Constitutional AI recipe: critiques, revisions and SFT, AI feedback "
                        "and DPO, then the before/after safety measurement (recipes/smollm2-constitutional.yaml)")
    p.add_argument("-c", "--config", default=None, metavar="RECIPE", help="the stage's YAML recipe (see recipes/)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="override a recipe key, e.g. --set learning_rate=1e-4 --set lora.r=8 (repeatable)")
    p.add_argument("-m", "--model", default=None, help="the model to train (overrides the recipe's)")
    p.add_argument("-o", "--output-dir", default=None, help="where to write (overrides the recipe's)")
    p.add_argument("--max-steps", type=int, default=None, help="stop after this many optimizer steps")
    p.add_argument("--resume", nargs="?", const="latest", default=None, metavar="CHECKPOINT",
                   help="continue from the latest checkpoint in the output folder (or the one given)")

    from temper.eval import pipeline as pipeline_cli
    from temper.eval import runner as eval_cli
    from temper.eval import report as report_cli
    from temper.gateway import cli as gateway_cli
    from temper.prompts import cli as prompts_cli
    from temper.rag import cli as rag_cli
    from temper.safety import cli as safety_cli
    from temper.safety.redteam import cli as redteam_cli
    safety_cli.add_parser(sub)
    redteam_cli.add_parser(sub)
    rag_cli.add_parser(sub, _add_model_args)
    gateway_cli.add_parser(sub)
    prompts_cli.add_parser(sub, _add_model_args)
    eval_cli.add_parser(sub)
    pipeline_cli.add_parser(sub)
    report_cli.add_parser(sub)

    p = sub.add_parser("chat", help="interactive chat with history and streaming output")
    _add_model_args(p)
    p.add_argument("--system", default=None, help="system message")
    _add_sampling_args(p, max_tokens=512)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if args.command in ("serve", "align", "safety", "redteam", "gateway", "eval", "pipeline"):  # a server or a trainer says what it does as it goes
        for name in ("temper", "uvicorn.error"):
            logging.getLogger(name).setLevel(logging.INFO)
    from temper import commands

    try:
        return commands.COMMANDS[args.command](args)
    except (TemperError, ValueError) as e:
        print(f"temper {args.command}: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(file=sys.stderr)
        return 130
    except BrokenPipeError:
        return 0


if __name__ == "__main__":
    sys.exit(main())
