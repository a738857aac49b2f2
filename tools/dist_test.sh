#!/usr/bin/env bash
# Evaluate a checkpoint with several processes (one per GPU, or GPUS CPU
# processes on a machine without GPUs). Every image is evaluated once and
# the metrics equal those of `tools/test.py` with one process.
#
#   tools/dist_test.sh CONFIG CHECKPOINT GPUS [test.py args...]
#
# Environment (mmdetection's names and defaults):
#   NNODES=1  NODE_RANK=0  MASTER_ADDR=127.0.0.1  PORT=29500
#   PYTHON=python   the interpreter (default: `python` of the active env)
set -euo pipefail

if [ $# -lt 3 ]; then
    echo "usage: $0 CONFIG CHECKPOINT GPUS [test.py args...]" >&2
    exit 2
fi
CONFIG=$1
CHECKPOINT=$2
GPUS=$3
NNODES=${NNODES:-1}
NODE_RANK=${NODE_RANK:-0}
PORT=${PORT:-29500}
MASTER_ADDR=${MASTER_ADDR:-"127.0.0.1"}
PYTHON=${PYTHON:-$(command -v python || command -v python3 || true)}
if [ -z "$PYTHON" ]; then
    echo "$0: no python on PATH: activate detkit's environment or set" \
        "PYTHON=/path/to/python" >&2
    exit 2
fi
TOOLS_DIR=$(cd "$(dirname "$0")" && pwd)

PYTHONPATH="$(dirname "$TOOLS_DIR")${PYTHONPATH:+:$PYTHONPATH}" \
exec "$PYTHON" -m torch.distributed.run \
    --nnodes="$NNODES" \
    --node_rank="$NODE_RANK" \
    --master_addr="$MASTER_ADDR" \
    --master_port="$PORT" \
    --nproc_per_node="$GPUS" \
    "$TOOLS_DIR/test.py" \
    "$CONFIG" \
    "$CHECKPOINT" \
    --launcher pytorch "${@:4}"
