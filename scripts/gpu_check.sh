#!/usr/bin/env bash
# One prepared GPU check (rexthinker/gpu_check.py): the GPU tests, the learner at 3B / 7B sizes
# (tokens/s, MFU, peak memory, a micro-batch budget sweep) and the stages on the small model, each
# part in its own subprocess under its own time limit; writes OUT/gpu_report.{json,md}.
#   bash scripts/gpu_check.sh --out outputs/gpu_check                  # one GPU, 450 s of parts
#   bash scripts/gpu_check.sh --out outputs/gpu_check --budget-s 300   # shrink every part's limit
#   bash scripts/gpu_check.sh --dry-run --out /tmp/gpu_check           # CPU, tiny shapes
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-$( [[ -x .venv/bin/python ]] && echo .venv/bin/python || echo python3 )}
exec "$PY" -m rexthinker.gpu_check "$@"
