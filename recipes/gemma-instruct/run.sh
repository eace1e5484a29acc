#!/usr/bin/env bash
# Gemma-3-270M base -> instruct, each stage trained and then measured (`make align-demo`).
# Stages: SFT, preference pairs from the SFT model's samples, DPO, GRPO; then the evaluation of base, SFT,
# SFT+DPO and SFT+GRPO side by side (runs/gemma-instruct/eval/table.md). Each stage resumes if interrupted.
set -euo pipefail
cd "$(dirname "$0")/../.."
R=recipes/gemma-instruct
OUT=${OUT:-runs/gemma-instruct}
PY=${PYTHON:-python}
run() { echo "== $*" >&2; /usr/bin/time -f "   %e s wall, %M KiB peak RSS" "$@"; }

[ -f "$OUT/sft/model/model.safetensors" ] || run temper align sft -c $R/sft.yaml -o "$OUT/sft" \
  $( [ -d "$OUT/sft/checkpoints" ] && echo --resume )
[ -f "$OUT/pairs.jsonl" ] || run $PY -m temper.align.pairs --model "$OUT/sft/model" -o "$OUT/pairs.jsonl" \
  --prompts "${PAIR_PROMPTS:-96}" --samples 4 --max-tokens 128
[ -f "$OUT/dpo/model/model.safetensors" ] || run temper align dpo -c $R/dpo.yaml -o "$OUT/dpo" \
  -m "$OUT/sft/model" --set "train_data={source: jsonl, path: $OUT/pairs.jsonl, skip: 16}" \
  --set "eval_data={source: jsonl, path: $OUT/pairs.jsonl, limit: 16}" || echo "DPO failed; going on" >&2
[ -f "$OUT/grpo/model/model.safetensors" ] || run temper align grpo -c $R/grpo.yaml -o "$OUT/grpo" \
  -m "$OUT/sft/model" $( [ -d "$OUT/grpo/checkpoints" ] && echo --resume ) || echo "GRPO failed; going on" >&2
models=(--model gemma3-270m --name base)
for stage in sft dpo grpo; do
  [ -f "$OUT/$stage/model/model.safetensors" ] && models+=(--model "$OUT/$stage/model" --name $stage)
done
run $PY -m temper.align.evaluate -o "$OUT/eval" --max-tokens 128 --train-types-limit 110 "${models[@]}"
