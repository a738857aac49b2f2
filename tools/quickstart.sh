#!/usr/bin/env bash
# The quick start: set everything up, then train detkit's light RetinaNet on
# its own synthetic shapes dataset, evaluate it (with an HTML evaluation
# report), and draw its detections on a validation image.
#
#   bash tools/quickstart.sh
#
# Variables: DATA_DIR (data/shapes), WORK_DIR (work_dirs/quickstart),
# OUT_DIR (outputs/quickstart), plus those of tools/setup_env.sh.
set -euo pipefail
cd "$(dirname "$0")/.."

DATA_DIR=${DATA_DIR:-data/shapes}
WORK_DIR=${WORK_DIR:-work_dirs/quickstart}
OUT_DIR=${OUT_DIR:-outputs/quickstart}
CONFIG=configs/quickstart/retinanet_r18_fpn_shapes.py

bash tools/setup_env.sh tests
PY=.venv/bin/python

echo "[quickstart] 1/4 generating the synthetic shapes dataset in $DATA_DIR"
$PY tools/misc/make_shapes_dataset.py --out-dir "$DATA_DIR" \
  --img-size 128 --num-train 600 --num-val 100 --max-objects 4 \
  --min-obj-size 16 --max-rotation 0 --img-format png

echo "[quickstart] 2/4 training $CONFIG (CPU; a few minutes)"
start=$(date +%s)
$PY tools/train.py "$CONFIG" --work-dir "$WORK_DIR" \
  --cfg-options "train_dataloader.dataset.data_root=$DATA_DIR/" \
  "val_dataloader.dataset.data_root=$DATA_DIR/" \
  "test_dataloader.dataset.data_root=$DATA_DIR/" \
  "val_evaluator.ann_file=$DATA_DIR/annotations/val.json" \
  "test_evaluator.ann_file=$DATA_DIR/annotations/val.json"
train_seconds=$(( $(date +%s) - start ))
CKPT=$(cat "$WORK_DIR/last_checkpoint")

echo "[quickstart] 3/4 evaluating $CKPT on the validation split"
$PY tools/test.py "$CONFIG" "$CKPT" --work-dir "$WORK_DIR/test" \
  --report "$OUT_DIR/report.html" \
  --cfg-options "test_dataloader.dataset.data_root=$DATA_DIR/" \
  "test_evaluator.ann_file=$DATA_DIR/annotations/val.json"

IMG=$(ls "$DATA_DIR"/images/val_* | head -n 1)
echo "[quickstart] 4/4 running the image demo on $IMG"
$PY demo/image_demo.py "$IMG" "$CONFIG" --weights "$CKPT" \
  --out-dir "$OUT_DIR" --pred-score-thr 0.5

echo "[quickstart] done: training took ${train_seconds}s; checkpoint $CKPT;" \
  "annotated picture in $OUT_DIR/vis/$(basename "$IMG")"
echo "[quickstart] evaluation report (open it in a browser):" \
  "$(cd "$OUT_DIR" && pwd)/report.html"
