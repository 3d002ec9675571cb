#!/usr/bin/env bash
# One-GPU check (< 10 minutes): writes benchmarks/results/gpu/gpu_check.{json,md}. Extra arguments go to the driver,
# e.g. `bash benchmarks/gpu_check.sh --dry-run --out /tmp/gc` (CPU, tiny configs). PYTHON overrides the interpreter.
set -euo pipefail
cd "$(dirname "$0")/.."
PY="${PYTHON:-}"
if [ -z "$PY" ]; then
  if [ -x .venv/bin/python ]; then PY=.venv/bin/python; else PY=python3; fi
fi
export PYTHONPATH="$PWD/src${PYTHONPATH:+:$PYTHONPATH}"
exec timeout 570 "$PY" benchmarks/gpu_check.py "$@"
