#!/usr/bin/env bash
# The whole test suite on a fresh machine, in two environments, one after the other:
#   main  .venv        (tools/env.sh)       Python 3.11, numpy < 2, legacy mediapipe 0.10.21: every test (unit,
#                      parity, end-to-end on tiny models, a real ComfyUI server over HTTP, headless browser);
#   today .venv-today  (tools/env_today.sh) Python 3.12, numpy 2, the newest mediapipe (Tasks API only),
#                      diffusers and transformers: the same suite without the browser tests; tests that need
#                      mediapipe's legacy API skip there.
# Each environment is built (or reused) just before its suite; the Debian packages the tests use are installed
# first. Extra arguments go to both pytest runs (`bash tools/test.sh -k pipeline`); LATENTSYNC_TEST_ENVS="main"
# (or "today") runs one environment only. Ends with one line per environment (versions, pytest's counts) and a
# total line; the exit status is non-zero when either run failed.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
bash "$ROOT/tools/system_deps.sh"
LOGS="$(mktemp -d)"
trap 'rm -rf "$LOGS"' EXIT

versions() {
  "$1/bin/python" - <<'PYEOF'
import platform
from importlib.metadata import PackageNotFoundError, version

def v(name):
    try:
        return version(name)
    except PackageNotFoundError:
        return "missing"

print(f"Python {platform.python_version()}, " + ", ".join(
    f"{name} {v(name)}" for name in ("numpy", "mediapipe", "torch", "diffusers", "transformers")))
PYEOF
}

build() {  # SCRIPT: build or reuse an environment, saying how long it took
  local start=$SECONDS
  bash "$ROOT/tools/$1"
  echo "[test] $1: environment ready after $((SECONDS - start)) s" >&2
}

SUMMARY=() STATUS=() COUNTS=()
run_suite() {  # NAME VENV PYTEST_ARGS...
  local name="$1" venv="$2"; shift 2
  local about
  about="$(versions "$venv")"
  echo "[test] ===== $name environment ($venv): $about" >&2
  set +e
  "$venv/bin/python" -m pytest "$@" 2>&1 | tee "$LOGS/$name.log"
  local rc=${PIPESTATUS[0]}
  set -e
  local counts
  counts="$(grep -E '(passed|failed|error|skipped|deselected|no tests ran).* in [0-9.]+s' "$LOGS/$name.log" \
            | tail -n 1 | sed -E 's/^=+ //; s/ =+$//')"
  SUMMARY+=("[test] $name: $about | ${counts:-no pytest summary (exit $rc)}")
  STATUS+=("$rc")
  COUNTS+=("$counts")
}

for name in ${LATENTSYNC_TEST_ENVS:-main today}; do
  case "$name" in
    main) build env.sh; run_suite main "$ROOT/.venv" "$@" ;;
    today) build env_today.sh; run_suite today "$ROOT/.venv-today" -m "not browser" "$@" ;;
    *) echo "[test] unknown environment '$name' in LATENTSYNC_TEST_ENVS (main, today)" >&2; exit 2 ;;
  esac
done

printf '%s\n' "${SUMMARY[@]}"
count() {  # WORD: the sum of "N WORD" over the runs' summaries
  printf '%s\n' "${COUNTS[@]}" | { grep -oE "[0-9]+ $1" || true; } | awk '{n += $1} END {print n + 0}'
}
# One closing line over both runs (pytest's errors count as failed here).
echo "total: $(count passed) passed, $(( $(count failed) + $(count error) )) failed, $(count skipped) skipped"
# Failed if any run failed; "no tests collected" (5) in one run is fine when the other ran tests.
final=5
for rc in "${STATUS[@]}"; do
  if [ "$rc" != 0 ] && [ "$rc" != 5 ]; then exit "$rc"; fi
  [ "$rc" = 0 ] && final=0
done
exit "$final"
