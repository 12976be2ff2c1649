#!/usr/bin/env bash
# Issue 21: the encoder on a GPU, in one call from a bare device machine (at most ~8 minutes).
#
#   On the device (carry benchmarks/gpu/carry/enc, made here by prepare_carry.py):
#     bash benchmarks/gpu/run_device.sh                # results in $OUT/encode_gpu.{json,md,log}
#   Here, on the CPU (tiny models and sizes, the same code path):
#     bash benchmarks/gpu/run_device.sh --dry-run      # results in runs/gpu-dry/
#
# Extra arguments go to bench_gpu_encoder.py (e.g. --budget 300, --skip compile).
# Nothing here needs the network; the GPU image has torch, transformers and sentence-transformers.
set -uo pipefail
cd "$(dirname "$0")/../.."
source benchmarks/gpu/device_env.sh gpu "$@"
CARRY=benchmarks/gpu/carry/enc
if [[ -d $CARRY/wheels ]] && ls $CARRY/wheels/*.whl >/dev/null 2>&1; then
  $PY -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target /tmp/site $CARRY/wheels/*.whl \
    && export PYTHONPATH="$PYTHONPATH:/tmp/site"
fi
command -v nvidia-smi >/dev/null && nvidia-smi > "$OUT/nvidia-smi.txt" 2>&1
LIMIT=${LIMIT:-470}   # the Python script keeps to --budget (default 420 s) and writes as it goes
timeout -k 10 "$LIMIT" $PY benchmarks/gpu/bench_gpu_encoder.py --out "$OUT" --carry "$CARRY" "$@" 2>&1 \
  | tee "$OUT/encode_gpu.log"
rc=${PIPESTATUS[0]}
echo "run_device.sh: exit $rc; results in $OUT"
exit "$rc"
