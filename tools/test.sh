#!/usr/bin/env bash
# The whole test suite on a fresh machine: builds/reuses .venv (tools/env.sh), installs the Debian packages the
# tests use, then runs pytest (unit, parity, end-to-end on tiny models, real ComfyUI server, headless browser).
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
bash "$ROOT/tools/env.sh"
bash "$ROOT/tools/system_deps.sh"
cd "$ROOT"
exec "$ROOT/.venv/bin/python" -m pytest "$@"
