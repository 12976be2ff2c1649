#!/usr/bin/env bash
# Issue 22 (as far as the current input path allows): the whole `embedlab embed` on one GPU, in one call
# from a bare device machine (at most ~8 minutes).
#
#   On the device (carry benchmarks/gpu/carry/e2e, made here by prepare_carry.py):
#     bash benchmarks/gpu/run_device_e2e.sh            # results in $OUT/embed_gpu.{json,md,log}
#   Here, on the CPU (LocalCluster, tiny model, the same code path):
#     bash benchmarks/gpu/run_device_e2e.sh --dry-run  # results in runs/gpu-e2e-dry/
#
# Installs the carried wheels (dask, distributed, dask-cuda, faiss-cpu, ...) with --no-deps into /tmp/site.
set -uo pipefail
cd "$(dirname "$0")/../.."
source benchmarks/gpu/device_env.sh gpu-e2e "$@"
CARRY=benchmarks/gpu/carry/e2e
if [[ $DRY == 0 ]]; then
  ls $CARRY/wheels/*.whl >/dev/null 2>&1 || { echo "no wheels in $CARRY/wheels: run prepare_carry.py and carry $CARRY"; exit 1; }
  $PY -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target /tmp/site $CARRY/wheels/*.whl \
    || { echo "wheel install failed"; exit 1; }
  export PYTHONPATH="$PYTHONPATH:/tmp/site"
fi
command -v nvidia-smi >/dev/null && nvidia-smi > "$OUT/nvidia-smi.txt" 2>&1
LIMIT=${LIMIT:-470}
timeout -k 10 "$LIMIT" $PY benchmarks/gpu/bench_gpu_e2e.py --out "$OUT" --carry "$CARRY" "$@" 2>&1 \
  | tee "$OUT/embed_gpu.log"
rc=${PIPESTATUS[0]}
echo "run_device_e2e.sh: exit $rc; results in $OUT"
exit "$rc"
