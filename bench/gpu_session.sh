#!/usr/bin/env bash
# The GPU measurements, sized for a lent GPU machine (commands of at most 10 minutes each).
# Run from the repository root on the GPU machine, part 1 then part 2; results land in $OUT
# (default /tmp/archdsl-gpu), from where they are copied into bench/results/ and committed.
#
#   bash bench/gpu_session.sh 1   # CUDA tests, tile sweep of the Triton kernels, Table-1 grid (+ calibration)
#   bash bench/gpu_session.sh 2   # RepLKNet-31B end to end, deploy vs references
#
# The machine needs torch, triton, torchvision and timm; lark/pydantic/... can travel as wheels in .whl/
# (installed to /tmp/site when that folder exists). Each step has its own time limit so that a slow one
# cannot eat the others' time; everything a step printed is kept in a log beside its results.
set -u
OUT=${OUT:-/tmp/archdsl-gpu}
mkdir -p "$OUT"
if [ -d .whl ]; then
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl
    export PYTHONPATH=/tmp/site:$PWD
else
    export PYTHONPATH=$PWD
fi
export PYTHONUNBUFFERED=1 ARCHDSL_CACHE_DIR=/tmp/archdsl-cache
nvidia-smi --query-gpu=name,clocks.sm,clocks.max.sm,temperature.gpu --format=csv

case "${1:-1}" in
1)
    timeout 120 python3 -m pytest -q -p no:cacheprovider tests/test_backends_cuda.py > "$OUT/pytest_cuda.txt" 2>&1
    tail -2 "$OUT/pytest_cuda.txt"
    timeout 150 python3 bench/tune_triton_dw.py --out "$OUT/triton_tune_cuda.txt" > /dev/null 2>&1
    tail -16 "$OUT/triton_tune_cuda.txt"
    timeout 280 python3 bench/bench_dwconv.py --device cuda --batch 64 --layers 24 --budget-s 0.5 --calibrate \
        --out "$OUT/dwconv_cuda.md" > "$OUT/dwconv_log.txt" 2>&1
    tail -3 "$OUT/dwconv_log.txt"
    cp archdsl/backends/calibration/cuda.json "$OUT/" 2>/dev/null
    ;;
2)
    timeout 240 python3 bench/bench_replknet_e2e.py --device cuda --batch 64 --method autotune --reps 10 \
        --baseline-reps 5 --out "$OUT/replknet_e2e_cuda.md" > "$OUT/replknet_log.txt" 2>&1
    tail -12 "$OUT/replknet_log.txt"
    timeout 300 python3 bench/bench_deploy.py --device cuda --rounds 20 --no-compile \
        --out "$OUT/deploy_cuda.md" > "$OUT/deploy_log.txt" 2>&1
    tail -8 "$OUT/deploy_log.txt"
    ;;
*)
    echo "usage: bash bench/gpu_session.sh 1|2" >&2
    exit 2
    ;;
esac
