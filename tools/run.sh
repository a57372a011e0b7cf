#!/usr/bin/env bash
# The main job: lip-sync a talking-head clip with LatentSync 1.6 through the command line.
#   bash tools/run.sh                                  # generated sample (astronaut + speech) → out/run/result.mp4
#   bash tools/run.sh VIDEO [AUDIO] [extra CLI options, e.g. --steps 20 --deepcache --models-dir DIR]
# Builds/reuses the venv (tools/env.sh). Missing weights are downloaded first (--no-download: never); without
# them it prints the missing-weights message (and how to get them) and exits with code 2.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
bash "$ROOT/tools/env.sh"
PY="$ROOT/.venv/bin/python"
OUT="$ROOT/out/run"
mkdir -p "$OUT"
cd "$ROOT"
if [ $# -ge 1 ] && [ "${1#-}" = "$1" ]; then
  VIDEO="$1"; shift
  AUDIO_ARGS=()
  if [ $# -ge 1 ] && [ "${1#-}" = "$1" ]; then AUDIO_ARGS=(--audio "$1"); shift; fi
else
  if [ ! -f "$OUT/sample/sample.mp4" ]; then
    echo "[run] generating a sample clip in $OUT/sample" >&2
    "$PY" tools/make_sample.py "$OUT/sample" --seconds 5 >/dev/null
  fi
  VIDEO="$OUT/sample/sample.mp4"
  AUDIO_ARGS=(--audio "$OUT/sample/speech.wav")
fi
exec "$PY" -m latentsync --video "$VIDEO" "${AUDIO_ARGS[@]}" -o "$OUT/result.mp4" "$@"
