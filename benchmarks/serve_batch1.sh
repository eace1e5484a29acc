#!/usr/bin/env bash
# Single-stream serving, one server after the other on the same machine: temper with fp32 weights, temper with
# the GGUF file's own 4-bit blocks (--quantization gguf), and llama.cpp's llama-server on the same Q4_1 file.
# Random 128-word prompts, 128 tokens each (ignore_eos), streaming completions, concurrency 1.
#   bash benchmarks/serve_batch1.sh [NUM_PROMPTS]        (JSON lines appended to serve_batch1.jsonl)
set -euo pipefail
N=${1:-8}
PY=${PYTHON:-.venv/bin/python}
LLAMACPP=${LLAMACPP_DIR:-$HOME/.cache/temper/llama.cpp}/bin
OUT=${OUT_FILE:-serve_batch1.jsonl}
GGUF=$($PY -c "from temper.models.registry import resolve; print(resolve('smollm2-135m-instruct'))")

wait_up() {  # url
  for _ in $(seq 600); do curl -sf "$1" >/dev/null && return 0; sleep 0.5; done
  echo "server at $1 did not come up" >&2; return 1
}
bench() {  # label base-url
  $PY benchmarks/serve.py --label "$1" --base-url "$2" --dataset random --input-len 128 --concurrency 1 \
    --num-prompts "$N" --max-tokens 128 --ignore-eos --out "$OUT"
}
run_temper() {  # label [serve flags...]
  local label=$1; shift
  $PY -m temper.cli serve --port 8011 --kv-cache-memory 1 --no-embeddings "$@" >/tmp/serve_batch1_temper.log 2>&1 &
  local pid=$!
  wait_up http://127.0.0.1:8011/health
  bench "$label" http://127.0.0.1:8011
  kill $pid; wait $pid 2>/dev/null || true
}

run_temper "temper fp32"
run_temper "temper gguf" --quantization gguf
if [ -x "$LLAMACPP/llama-server" ]; then
  "$LLAMACPP/llama-server" -m "$GGUF" --port 8012 -np 1 -c 4096 -t "$(nproc)" >/tmp/serve_batch1_llamacpp.log 2>&1 &
  pid=$!
  wait_up http://127.0.0.1:8012/health
  bench "llama.cpp Q4_1" http://127.0.0.1:8012
  kill $pid; wait $pid 2>/dev/null || true
else
  echo "no $LLAMACPP/llama-server: build it with benchmarks/anchors/build_llamacpp.sh" >&2
fi
