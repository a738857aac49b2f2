#!/usr/bin/env bash
# Create (or reuse) the virtual environment .venv and install detkit into it.
#
# torch/torchvision: TORCH_SPEC overrides the pinned pair, e.g.
#   TORCH_SPEC="torch==2.9.1 torchvision==0.24.1" bash tools/setup_env.sh
# Without it, x86_64 uses torch 2.14.1 / torchvision 0.29.1 and aarch64
# torch 2.9.1 / torchvision 0.24.1.
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON=${PYTHON:-python3}
VENV=${VENV:-.venv}
EXTRAS=${1:-tests}

if [ -z "${TORCH_SPEC:-}" ]; then
  case "$(uname -m)" in
    aarch64|arm64) TORCH_SPEC="torch==2.9.1 torchvision==0.24.1" ;;
    *)             TORCH_SPEC="torch==2.14.1 torchvision==0.29.1" ;;
  esac
fi

if [ ! -x "$VENV/bin/python" ]; then
  echo "[setup] creating $VENV with $($PYTHON --version)"
  "$PYTHON" -m venv "$VENV"
fi
PY="$VENV/bin/python"
# Only install torch when the pinned version is not already there.
want_torch=$(echo "$TORCH_SPEC" | sed -n 's/.*torch==\([^ ]*\).*/\1/p')
have_torch=$("$PY" -c 'import torch; print(torch.__version__.split("+")[0])' 2>/dev/null || true)
if [ -z "$have_torch" ] || { [ -n "$want_torch" ] && [ "$have_torch" != "$want_torch" ]; }; then
  echo "[setup] installing $TORCH_SPEC"
  # shellcheck disable=SC2086
  "$PY" -m pip install -q --disable-pip-version-check $TORCH_SPEC
fi
echo "[setup] installing detkit[$EXTRAS] (pure Python, nothing is compiled)"
"$PY" -m pip install -q --disable-pip-version-check -e ".[$EXTRAS]"
"$PY" -c 'import detkit, torch, mmengine; print(f"[setup] detkit {detkit.__version__}, torch {torch.__version__}, mmengine {mmengine.__version__}")'
