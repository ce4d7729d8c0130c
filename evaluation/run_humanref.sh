#!/usr/bin/env bash
# HumanRef evaluation of one checkpoint: generate predictions (resumable, one Ray actor per GPU),
# then score them with the HumanRef metric. Extra flags go to evaluation/run_humanref.py, e.g.
#   bash evaluation/run_humanref.sh IDEA-Research/Rex-Thinker-GRPO-7B data/HumanRef/annotations.jsonl \
#       outputs/humanref/rex-thinker-grpo-7b --batch-size 128
#   bash evaluation/run_humanref.sh outputs/demo/grpo/final outputs/demo/data/test/humanref/annotations.jsonl \
#       outputs/demo/eval --backend hf --num-workers 0
set -euo pipefail
if [[ $# -lt 3 ]]; then
  echo "usage: $0 MODEL ANNOTATIONS_JSONL OUT_DIR [run_humanref.py flags]" >&2
  exit 2
fi
ROOT=$(cd "$(dirname "$0")/.." && pwd)
PY=${PY:-$( [[ -x "$ROOT/.venv/bin/python" ]] && echo "$ROOT/.venv/bin/python" || echo python )}
MODEL=$1 GT=$2 OUT=$3
shift 3
export TOKENIZERS_PARALLELISM=${TOKENIZERS_PARALLELISM:-false}
exec "$PY" "$ROOT/evaluation/run_humanref.py" --model "$MODEL" --gt "$GT" --out "$OUT" "$@"
