# Sourced by run_device.sh and run_device_e2e.sh from the repository root:
#   source benchmarks/gpu/device_env.sh OUT_STEM "$@"
# Sets DRY (1 with --dry-run), OUT (the device tool's $OUT, else runs/OUT_STEM-dry|out), the offline
# environment, PYTHONPATH (the checkout first) and PY (PYTHON, else .venv's python, else python3).
DRY=0; for a in "${@:2}"; do [[ $a == --dry-run ]] && DRY=1; done
OUT=${OUT:-$PWD/runs/$1-$([[ $DRY == 1 ]] && echo dry || echo out)}
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
PY=${PYTHON:-}
if [[ -z $PY ]]; then if [[ -x .venv/bin/python ]]; then PY=.venv/bin/python; else PY=python3; fi; fi
