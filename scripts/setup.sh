#!/usr/bin/env bash
# Create .venv/ in the repo root and install embedlab into it, with its test dependencies.
# torch goes in first and pinned: on a CPU machine pip must not resolve a multi-GB CUDA build.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$PY" -m venv .venv
.venv/bin/python -m pip install --quiet --upgrade pip
if command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1; then
  .venv/bin/python -m pip install --quiet "torch==2.13.0"
  .venv/bin/python -m pip install --quiet -e ".[test,gpu]"
else
  .venv/bin/python -m pip install --quiet "torch==2.13.0"  # the CPU build on this machine's disk
  .venv/bin/python -m pip install --quiet -e ".[test]"
fi
