#!/usr/bin/env bash
# Debian packages the tests use: chromium (browser tests, driven by Playwright), espeak-ng (real speech).
# Installs only what is missing; needs root (CI and these machines run as root). Skips quietly otherwise.
set -euo pipefail
need=()
command -v chromium >/dev/null 2>&1 || need+=(chromium)
command -v espeak-ng >/dev/null 2>&1 || need+=(espeak-ng)
[ ${#need[@]} -eq 0 ] && exit 0
if [ "$(id -u)" != "0" ] || ! command -v apt-get >/dev/null 2>&1; then
  echo "[deps] not root or no apt-get: tests needing ${need[*]} will be skipped" >&2; exit 0
fi
echo "[deps] apt-get install ${need[*]}" >&2
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq >/dev/null
apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
