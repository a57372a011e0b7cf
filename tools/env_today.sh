#!/usr/bin/env bash
# Creates (or reuses) .venv-today: the pack as a ComfyUI user installs it today — Python 3.12, numpy 2 and the
# newest mediapipe (Tasks API only, no legacy FaceMesh), diffusers and transformers that pip resolves, with the
# same vendored ComfyUI 0.3.75 and the editable library as .venv. The test suite runs in it a second time
# (tools/test.sh).
# Idempotent: a stamp of the inputs skips a rebuild; a rebuild upgrades the unpinned packages to the newest.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="${LATENTSYNC_TODAY_VENV:-$ROOT/.venv-today}"
stamp_of() {
  cat "$ROOT/tools/env_today.sh" "$ROOT/tools/fetch_comfyui.sh" "$ROOT/pyproject.toml" "$ROOT/requirements.txt" \
    "$ROOT/requirements-test.txt" | sha256sum | cut -c1-16
}
STAMP="$VENV/.ready-$(stamp_of)"
if [ -f "$STAMP" ]; then exit 0; fi

log() { echo "[env-today] $*" >&2; }
if [ -z "${PYTHON_TODAY:-}" ]; then
  for candidate in "$HOME/.pyenv/versions/3.12.1/bin/python" python3.12; do
    if command -v "$candidate" >/dev/null 2>&1; then PYTHON_TODAY="$candidate"; break; fi
  done
fi
[ -n "${PYTHON_TODAY:-}" ] || { log "no Python 3.12 found: set PYTHON_TODAY=/path/to/python3.12"; exit 1; }
[ -x "$VENV/bin/python" ] || { log "creating $VENV with $PYTHON_TODAY"; "$PYTHON_TODAY" -m venv "$VENV"; }
PIP=("$VENV/bin/python" -m pip)
"${PIP[@]}" install -q --upgrade pip >/dev/null

COMFY="$VENV/comfyui"
bash "$ROOT/tools/fetch_comfyui.sh" "$VENV/bin/python" "$COMFY"

log "installing packages (one resolve)"
# torch is pinned to the main env's release: its CUDA libraries (nvidia-*, py3-none wheels, ~3 GB) are then
# already on this machine's disk and only the cp312 torch/triton wheels (~0.8 GB) come from PyPI; any torch
# that ComfyUI 0.3.75 accepts would do. Everything else is the newest that pip resolves.
"${PIP[@]}" install -q --upgrade \
  torch==2.14.1 torchvision==0.29.1 torchaudio==2.11.0 \
  -r "$COMFY/requirements.txt" \
  -r "$ROOT/requirements.txt" -r "$ROOT/requirements-test.txt" -e "$ROOT" \
  "numpy>=2" mediapipe diffusers transformers
"${PIP[@]}" check
rm -f "$VENV"/.ready-*
touch "$STAMP"
log "ready: $VENV"
