#!/usr/bin/env bash
# Install the headless browser the web demo's browser test drives (tests/test_web_demo_browser.py):
# Debian's chromium, which Playwright runs through executable_path (no `playwright install`, no
# download outside apt), and a colour emoji font so the page's ✅ / ❌ / ⚠ marks render in it.
#
# Idempotent: does nothing when both packages are installed; otherwise apt-get (as root, or through
# sudo). scripts/install_env.sh calls it. About 30 s of apt on a fresh Debian 12 machine.
#
#   bash scripts/install_browser.sh
set -euo pipefail

PACKAGES=(chromium fonts-noto-color-emoji)
missing=()
for pkg in "${PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
done
[[ ${#missing[@]} -eq 0 ]] && exit 0

if ! command -v apt-get >/dev/null; then
  echo "[install] no apt-get: install Chromium yourself for the browser test (missing: ${missing[*]})" >&2
  exit 1
fi
SUDO=()
if [[ $(id -u) -ne 0 ]]; then
  command -v sudo >/dev/null || { echo "[install] installing ${missing[*]} needs root (no sudo here)" >&2; exit 1; }
  SUDO=(sudo)
fi
echo "[install] browser for the web demo test: ${missing[*]} (apt)"
start=$(date +%s)
export DEBIAN_FRONTEND=noninteractive
"${SUDO[@]}" apt-get update -q >/dev/null
"${SUDO[@]}" apt-get install -y -q --no-install-recommends "${missing[@]}" >/dev/null
echo "[install] browser installed in $(( $(date +%s) - start )) s"
