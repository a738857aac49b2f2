# Faster R-CNN R-50-caffe FPN multi-scale, 24 epochs. As in mmdetection,
# only the milestones change: the step scheduler keeps the inherited
# end=12, so it stops after epoch 12 and the steps at 16 and 23 never
# happen (the LR stays at its base value after warm-up).
_base_ = './faster-rcnn_r50-caffe_fpn_ms-1x_coco.py'

param_scheduler = [
    dict(
        type='LinearLR', start_factor=0.001, by_epoch=False, begin=0, end=500),
    dict(
        type='MultiStepLR',
        begin=0,
        end=12,
        by_epoch=True,
        milestones=[16, 23],
        gamma=0.1)
]
train_cfg = dict(max_epochs=24)
