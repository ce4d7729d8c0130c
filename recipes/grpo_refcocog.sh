#!/usr/bin/env bash
# Stage 2, GRPO, the released RefCOCOg recipe (recipes/configs/grpo_refcocog.yaml). Overrides, e.g.:
#   bash recipes/grpo_refcocog.sh model.path=/models/Rex-Thinker-GRPO-7B data.train=[/data/refcocog/train.parquet] resources.gpus=8
# Join an existing Ray cluster with RAY_ADDRESS=<head>:6379 (README, "Stage 2: GRPO").
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-$( [[ -x .venv/bin/python ]] && echo .venv/bin/python || echo python )}
CONFIG=${CONFIG:-recipes/configs/grpo_refcocog.yaml}
exec "$PY" -m rexthinker.grpo --config "$CONFIG" "$@"
