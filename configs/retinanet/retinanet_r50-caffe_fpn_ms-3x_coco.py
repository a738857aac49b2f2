# RetinaNet R-50-caffe FPN multi-scale, 36 epochs (LR steps at 28, 34).
_base_ = './retinanet_r50-caffe_fpn_ms-1x_coco.py'

train_cfg = dict(max_epochs=36)
param_scheduler = [
    dict(
        type='LinearLR', start_factor=0.001, by_epoch=False, begin=0, end=500),
    dict(
        type='MultiStepLR',
        begin=0,
        end=36,
        by_epoch=True,
        milestones=[28, 34],
        gamma=0.1)
]
