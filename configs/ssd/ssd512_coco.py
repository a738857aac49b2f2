_base_ = 'ssd300_coco.py'

# model settings
input_size = 512
model = dict(
    neck=dict(
        out_channels=(512, 1024, 512, 256, 256, 256, 256),
        level_strides=(2, 2, 2, 2, 1),
        level_paddings=(1, 1, 1, 1, 1),
        last_kernel_size=4),
    bbox_head=dict(
        in_channels=(512, 1024, 512, 256, 256, 256, 256),
        anchor_generator=dict(
            type='SSDAnchorGenerator',
            scale_major=False,
            input_size=input_size,
            basesize_ratio_range=(0.1, 0.9),
            strides=[8, 16, 32, 64, 128, 256, 512],
            ratios=[[2], [2, 3], [2, 3], [2, 3], [2, 3], [2], [2]])))

# dataset settings: SSD300's pipelines with a 512 x 512 resize.
train_pipeline = [
    dict(step, scale=(input_size, input_size)) if step.type == 'Resize' else
    step for step in _base_.train_pipeline
]
test_pipeline = [
    dict(step, scale=(input_size, input_size)) if step.type == 'Resize' else
    step for step in _base_.test_pipeline
]
train_dataloader = dict(dataset=dict(dataset=dict(pipeline=train_pipeline)))
val_dataloader = dict(dataset=dict(pipeline=test_pipeline))
test_dataloader = val_dataloader
