#!/usr/bin/env bash
# Train under Slurm: srun starts GPUS tasks (GPUS_PER_NODE per node), one
# process per GPU; each finds its rank from SLURM_PROCID.
#
#   tools/slurm_train.sh PARTITION JOB_NAME CONFIG WORK_DIR [train.py args...]
#
# Environment (mmdetection's names and defaults):
#   GPUS=8           tasks (processes) in all
#   GPUS_PER_NODE=8  tasks per node (and GPUs asked for per node)
#   CPUS_PER_TASK=5  CPU cores per task (dataloader workers)
#   SRUN_ARGS=""     more srun options, e.g. "--quotatype=auto"
#   GRES=gpu:$GPUS_PER_NODE   srun --gres; GRES="" on a partition without
#                    GPUs (the tasks then train on CPU with gloo)
#   PYTHON=python    the interpreter on the nodes
# scancel, preemption and the time limit send SIGTERM to every task: the
# tasks agree on an iteration, save work_dir/interrupted_iter_N.pth and exit
# 143; resubmit with --resume. SRUN_ARGS="--signal=TERM@120" asks for that
# SIGTERM 120 s before the time limit.
set -euo pipefail

if [ $# -lt 4 ]; then
    echo "usage: $0 PARTITION JOB_NAME CONFIG WORK_DIR [train.py args...]" >&2
    exit 2
fi
PARTITION=$1
JOB_NAME=$2
CONFIG=$3
WORK_DIR=$4
GPUS=${GPUS:-8}
GPUS_PER_NODE=${GPUS_PER_NODE:-8}
CPUS_PER_TASK=${CPUS_PER_TASK:-5}
SRUN_ARGS=${SRUN_ARGS:-""}
GRES=${GRES-gpu:${GPUS_PER_NODE}}
PYTHON=${PYTHON:-python}
TOOLS_DIR=$(cd "$(dirname "$0")" && pwd)

# SRUN_ARGS is split into words on purpose: it holds several options.
# shellcheck disable=SC2086
PYTHONPATH="$(dirname "$TOOLS_DIR")${PYTHONPATH:+:$PYTHONPATH}" \
exec srun -p "$PARTITION" \
    --job-name="$JOB_NAME" \
    ${GRES:+--gres="$GRES"} \
    --ntasks="$GPUS" \
    --ntasks-per-node="$GPUS_PER_NODE" \
    --cpus-per-task="$CPUS_PER_TASK" \
    --kill-on-bad-exit=1 \
    ${SRUN_ARGS} \
    "$PYTHON" -u "$TOOLS_DIR/train.py" "$CONFIG" --work-dir="$WORK_DIR" \
    --launcher=slurm "${@:5}"
