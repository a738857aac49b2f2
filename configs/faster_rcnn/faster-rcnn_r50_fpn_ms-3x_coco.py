# Faster R-CNN R-50 FPN, 3x schedule with the shorter side drawn in
# [640, 800] (common/ms_3x_coco.py).
_base_ = ['../common/ms_3x_coco.py', '../_base_/models/faster-rcnn_r50_fpn.py']
