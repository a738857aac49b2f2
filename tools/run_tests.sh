#!/usr/bin/env bash
# Set everything up and run the test suite (what CI runs).
set -euo pipefail
cd "$(dirname "$0")/.."
bash tools/setup_env.sh tests

# The HTML report's browser test needs headless Chromium (Debian's chromium
# package): installed here where it is missing and apt-get can (as root or
# with password-less sudo); elsewhere that test skips (and fails with
# CI=true). DETKIT_NO_APT=1 leaves the system alone.
if [ -z "${DETKIT_NO_APT:-}" ] && ! command -v chromium >/dev/null 2>&1 \
    && command -v apt-get >/dev/null 2>&1; then
  SUDO=""
  [ "$(id -u)" = 0 ] || SUDO="sudo -n"
  if [ -z "$SUDO" ] || sudo -n true 2>/dev/null; then
    echo "[setup] installing chromium for the report's browser test (apt-get)"
    APT="$SUDO env DEBIAN_FRONTEND=noninteractive apt-get -q -y"
    $APT install chromium >/dev/null 2>&1 \
      || { $APT update >/dev/null 2>&1 && $APT install chromium >/dev/null 2>&1; } \
      || echo "[setup] could not install chromium; the browser test will skip"
  fi
fi
exec .venv/bin/python -m pytest tests -q -p no:cacheprovider "$@"
