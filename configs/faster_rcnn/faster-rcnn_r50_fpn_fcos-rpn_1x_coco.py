# Faster R-CNN R-50 FPN 1x whose proposals come from an FCOS head (one
# class, anchor-free) on P3-P7 instead of the RPN; the RoI extractor reads
# the same five levels.
_base_ = [
    '../_base_/models/faster-rcnn_r50_fpn.py',
    '../_base_/datasets/coco_detection.py',
    '../_base_/schedules/schedule_1x.py', '../_base_/default_runtime.py'
]

model = dict(
    neck=dict(
        start_level=1,
        add_extra_convs='on_output',  # P6 from P5
        relu_before_extra_convs=True),
    rpn_head=dict(
        _delete_=True,  # none of the RPN head's keys apply
        type='FCOSHead',
        # a proposal head has one class (TwoStageDetector sets it to 1)
        num_classes=1,
        in_channels=256,
        stacked_convs=4,
        feat_channels=256,
        strides=[8, 16, 32, 64, 128],
        loss_cls=dict(
            type='FocalLoss',
            use_sigmoid=True,
            gamma=2.0,
            alpha=0.25,
            loss_weight=1.0),
        loss_bbox=dict(type='IoULoss', loss_weight=1.0),
        loss_centerness=dict(
            type='CrossEntropyLoss', use_sigmoid=True, loss_weight=1.0)),
    roi_head=dict(
        bbox_roi_extractor=dict(featmap_strides=[8, 16, 32, 64, 128])))

# 1000 iterations of warm-up: with 500 the loss becomes NaN.
param_scheduler = [
    dict(
        type='LinearLR', start_factor=0.001, by_epoch=False, begin=0,
        end=1000),
    dict(
        type='MultiStepLR',
        begin=0,
        end=12,
        by_epoch=True,
        milestones=[8, 11],
        gamma=0.1)
]
