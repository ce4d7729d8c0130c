#!/usr/bin/env bash
# Stage 1, SFT, in the paper's setting (recipes/configs/sft.yaml: Qwen2.5-VL-7B-Instruct, 2 epochs,
# lr 2e-5, ZeRO-3, 8 GPUs). Any dotted override goes on the command line, e.g.
#   bash recipes/sft.sh model.path=/models/Qwen2.5-VL-7B-Instruct data.train=[/data/hrcot/humanref_cot] trainer.nproc=4
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-$( [[ -x .venv/bin/python ]] && echo .venv/bin/python || echo python )}
CONFIG=${CONFIG:-recipes/configs/sft.yaml}
exec "$PY" -m rexthinker.sft --config "$CONFIG" "$@"
