#!/usr/bin/env bash
# The main job: lip-sync a talking-head clip with LatentSync 1.6 through the command line.
#   bash tools/run.sh                                  # generated sample (astronaut + speech) → out/run/result.mp4
#   bash tools/run.sh VIDEO [AUDIO] [extra CLI options, e.g. --steps 20 --deepcache --models-dir DIR]
# Builds/reuses the venv (tools/env.sh; LATENTSYNC_VENV picks another one). Missing weights are downloaded first
# (resumable, with a progress bar) unless --no-download is given; offline (HF_HUB_OFFLINE=1, no network) it prints
# the missing-weights message and exits 2 within seconds, before generating or decoding anything.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
bash "$ROOT/tools/env.sh"
PY="${LATENTSYNC_VENV:-$ROOT/.venv}/bin/python"
OUT="$ROOT/out/run"
mkdir -p "$OUT"
cd "$ROOT"
if [ $# -ge 1 ] && [ "${1#-}" = "$1" ]; then
  VIDEO="$1"; shift
  AUDIO_ARGS=()
  if [ $# -ge 1 ] && [ "${1#-}" = "$1" ]; then AUDIO_ARGS=(--audio "$1"); shift; fi
else
  # weights before the sample clip: without them (and no way to download them) stop at once with exit 2
  WEIGHTS_CMD=download; WEIGHTS_ARGS=(); prev=""
  for a in "$@"; do
    case "$prev" in --models-dir|--version) WEIGHTS_ARGS+=("$prev" "$a");; esac
    case "$a" in --models-dir=*|--version=*) WEIGHTS_ARGS+=("$a");; --no-download) WEIGHTS_CMD=status;; esac
    prev="$a"
  done
  "$PY" -m latentsync "$WEIGHTS_CMD" "${WEIGHTS_ARGS[@]}"
  if [ ! -f "$OUT/sample/sample.mp4" ]; then
    echo "[run] generating a sample clip in $OUT/sample" >&2
    "$PY" tools/make_sample.py "$OUT/sample" --seconds 5 >/dev/null
  fi
  VIDEO="$OUT/sample/sample.mp4"
  AUDIO_ARGS=(--audio "$OUT/sample/speech.wav")
fi
exec "$PY" -m latentsync --video "$VIDEO" "${AUDIO_ARGS[@]}" -o "$OUT/result.mp4" "$@"
