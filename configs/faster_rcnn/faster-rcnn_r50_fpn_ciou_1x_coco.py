# Faster R-CNN R-50 FPN 1x whose RoI head regresses decoded boxes with
# the CIoU loss (weight 12.0) instead of L1 on deltas.
_base_ = './faster-rcnn_r50_fpn_1x_coco.py'

model = dict(
    roi_head=dict(
        bbox_head=dict(
            reg_decoded_bbox=True,
            loss_bbox=dict(type='CIoULoss', loss_weight=12.0))))
