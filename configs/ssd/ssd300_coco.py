_base_ = [
    '../_base_/models/ssd300.py', '../_base_/datasets/coco_ssd.py',
    '../_base_/schedules/schedule_2x.py', '../_base_/default_runtime.py'
]
# The pipelines (Expand, MinIoURandomCrop, 300 x 300 resize, flip,
# photometric distortion) and the 5x repeated COCO training set come from
# _base_/datasets/coco_ssd.py.

# optimizer
optim_wrapper = dict(
    type='OptimWrapper',
    optimizer=dict(type='SGD', lr=2e-3, momentum=0.9, weight_decay=5e-4))

# mmdetection's hooks (the loss check shares the detectors' non-finite
# guard, see model.skip_nonfinite), then detkit's broken-image report.
custom_hooks = [
    dict(type='NumClassCheckHook'),
    dict(type='CheckInvalidLossHook', interval=50, priority='VERY_LOW'),
    dict(type='BrokenImageReportHook'),
]

# The LR above is for 8 GPUs x 8 images; `--auto-scale-lr` rescales it.
auto_scale_lr = dict(base_batch_size=64)
