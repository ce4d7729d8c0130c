#!/usr/bin/env bash
# Stage 2, GRPO, the released RefCOCOg recipe on Qwen3-VL (recipes/configs/grpo_refcocog_qwen3_vl.yaml:
# Qwen3-VL's pixel limits, boxes 0-1000). Make the rows in that frame first, then e.g.:
#   python -m data_tools refcocog ... --family qwen3_vl --out data/refcocog-qwen3_vl
#   bash recipes/grpo_refcocog_qwen3_vl.sh model.path=outputs/sft_qwen3_vl/final resources.gpus=8
# Join an existing Ray cluster with RAY_ADDRESS=<head>:6379 (README, "Stage 2: GRPO").
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-$( [[ -x .venv/bin/python ]] && echo .venv/bin/python || echo python )}
CONFIG=${CONFIG:-recipes/configs/grpo_refcocog_qwen3_vl.yaml}
exec "$PY" -m rexthinker.grpo --config "$CONFIG" "$@"
