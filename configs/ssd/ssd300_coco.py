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

# mmdetection adds CheckInvalidLossHook here; detkit's detectors check
# every loss for NaN/Inf in train_step (model.skip_nonfinite), so the
# default runtime's hooks stay.

# The LR above is for 8 GPUs x 8 images; `--auto-scale-lr` rescales it.
auto_scale_lr = dict(base_batch_size=64)
