#!/usr/bin/env bash
# `make demo`: the pipeline on the embedded SynthRef task with the small model, on CPU.
# Today: build the small Qwen2.5-VL and the SynthRef data, then show them. Overrides, e.g.:
#   bash recipes/demo.sh --train 4000 --out outputs/demo2
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
exec "$PY" scripts/demo.py "$@"
