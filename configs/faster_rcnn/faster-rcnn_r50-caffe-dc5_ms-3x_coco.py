# Faster R-CNN DC5 multi-scale, 36 epochs. As in mmdetection, only the
# milestones change: the step scheduler keeps the inherited end=12, so it
# stops after epoch 12 and the steps at 28 and 34 never happen (the LR
# stays at its base value after warm-up).
_base_ = './faster-rcnn_r50-caffe-dc5_ms-1x_coco.py'

param_scheduler = [
    dict(
        type='LinearLR', start_factor=0.001, by_epoch=False, begin=0, end=500),
    dict(
        type='MultiStepLR',
        begin=0,
        end=12,
        by_epoch=True,
        milestones=[28, 34],
        gamma=0.1)
]
train_cfg = dict(max_epochs=36)
