#!/usr/bin/env bash
# Train with several processes on this machine (and, with NNODES > 1, on
# several machines): one process per GPU, or GPUS processes on a CPU-only
# machine (gloo, CPU DDP).
#
#   tools/dist_train.sh CONFIG GPUS [train.py args...]
#
# Environment (mmdetection's names and defaults):
#   NNODES=1  NODE_RANK=0  MASTER_ADDR=127.0.0.1  PORT=29500
#   PYTHON=python   the interpreter (default: `python` of the active env)
# Several machines: run the same command on every machine with the same
# NNODES, MASTER_ADDR (the address of machine 0) and PORT, and NODE_RANK
# 0 .. NNODES-1.
set -euo pipefail

if [ $# -lt 2 ]; then
    echo "usage: $0 CONFIG GPUS [train.py args...]" >&2
    echo "  GPUS: processes on this machine (one per GPU; on a CPU-only" >&2
    echo "  machine, the number of CPU processes)" >&2
    exit 2
fi
CONFIG=$1
GPUS=$2
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

# The repository root on PYTHONPATH lets a source checkout run without
# `pip install -e .`. exec: a signal to this script reaches torchrun, which
# forwards it to every worker (on Ctrl-C or SIGTERM, training saves
# interrupted_iter_N.pth and exits 130 / 143; continue with --resume).
PYTHONPATH="$(dirname "$TOOLS_DIR")${PYTHONPATH:+:$PYTHONPATH}" \
exec "$PYTHON" -m torch.distributed.run \
    --nnodes="$NNODES" \
    --node_rank="$NODE_RANK" \
    --master_addr="$MASTER_ADDR" \
    --master_port="$PORT" \
    --nproc_per_node="$GPUS" \
    "$TOOLS_DIR/train.py" \
    "$CONFIG" \
    --launcher pytorch "${@:3}"
