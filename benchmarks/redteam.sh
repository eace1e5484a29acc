#!/usr/bin/env bash
# The red team against `temper serve` with the default model, guard off then on, and the guard's latency.
#   make redteam        (or: bash benchmarks/redteam.sh with temper on PATH)
# Env: OBJECTIVES (per family, default 30), OUT (default runs/redteam), CONCURRENCY (default 16),
#      FAMILIES (default: all), POLICY (the guard policy, default `default`), GUARD_ONLY=1 (only the guarded
#      run, e.g. to compare two sets of heads: POLICY=my-policy.yaml with `models: FOLDER`).
#      Servers run one at a time so that they do not share the CPU while measured.
set -euo pipefail
OBJECTIVES=${OBJECTIVES:-30}
OUT=${OUT:-runs/redteam}
CONCURRENCY=${CONCURRENCY:-16}
FAMILIES=${FAMILIES:-direct,jailbreak,roleplay,encoding,rephrase,many_shot,injection}
POLICY=${POLICY:-default}
GUARD_ONLY=${GUARD_ONLY:-0}
MODEL=smollm2-135m-instruct
mkdir -p "$OUT"
python -c "from temper.safety.classifiers import GuardModels; GuardModels.load_or_train()"

start() {  # start PORT [serve flags...]: a server in the background, wait until it is ready
  local port=$1; shift
  temper serve --port "$port" --no-embeddings --max-num-seqs 32 "$@" >"$OUT/serve-$port.log" 2>&1 &
  echo $! >"$OUT/serve-$port.pid"
  for _ in $(seq 600); do
    curl -sf "http://127.0.0.1:$port/health" >/dev/null && return 0
    sleep 1
  done
  echo "server on $port did not start; see $OUT/serve-$port.log" >&2; return 1
}
stop() { kill "$(cat "$OUT/serve-$1.pid")" 2>/dev/null || true; wait "$(cat "$OUT/serve-$1.pid")" 2>/dev/null || true; }
trap 'stop 8101; stop 8102' EXIT

run() {  # run NAME PORT
  temper redteam --target "http://127.0.0.1:$2/v1" --model "$MODEL" --attacks "$FAMILIES" \
    --max-objectives "$OBJECTIVES" --concurrency "$CONCURRENCY" --seed 0 --output "$OUT/$1" --no-progress \
    | tee "$OUT/$1.txt"
}

if [ "$GUARD_ONLY" != 1 ]; then
  start 8101
  run guard-off 8101
  stop 8101
fi
start 8102 --guard "$POLICY"
run guard-on 8102
cp "$OUT/serve-8102.log" "$OUT/guard-on-server.log"
[ "$GUARD_ONLY" = 1 ] && exit 0
start 8101
python benchmarks/guard_latency.py --off http://127.0.0.1:8101/v1 --on http://127.0.0.1:8102/v1 | tee "$OUT/latency.txt"
