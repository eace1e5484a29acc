#!/usr/bin/env bash
# The GPU check of the engine, sized for one 10-minute call on one card (the `device` tool or any CUDA box):
# the -m gpu tests of the Triton backend, then benchmarks/gpu/bench.py. Writes logs under $OUT (or ./gpu-out).
#   bash benchmarks/gpu/run.sh [bench.py options]
# Needs the machine's python3 with torch (CUDA), triton and transformers; wheels of temper's other imports
# that the machine lacks can sit in .whl/ (installed into /tmp/site, nothing else is touched).
set -uo pipefail
OUT=${OUT:-gpu-out}
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1
if ls .whl/*.whl >/dev/null 2>&1; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
    && export PYTHONPATH=/tmp/site:${PYTHONPATH:-}
fi
export PYTHONPATH=$PWD:${PYTHONPATH:-}
nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.sm,clocks.mem --format=csv | tee "$OUT/gpu.txt"
python3 -c "import torch, triton, transformers; print('torch', torch.__version__, 'triton', triton.__version__, 'transformers', transformers.__version__)" | tee -a "$OUT/gpu.txt"
timeout 240 python3 -m pytest -m gpu -q -p no:cacheprovider tests/engine/test_triton_backend.py tests/models/test_triton_ops.py 2>&1 | tee "$OUT/tests.log" | tail -30
python3 benchmarks/gpu/bench.py --out "$OUT/bench.jsonl" "$@" 2>&1 | tee "$OUT/bench.log" | grep -v "^  {" 
