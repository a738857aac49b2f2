# Faster R-CNN R-50 FPN with large-scale jitter, 200 passes, mixed
# precision, 8 GPUs x 8 images of exactly 1024x1024.
_base_ = [
    '../_base_/models/faster-rcnn_r50_fpn.py',
    '../common/lsj-200e_coco-detection.py'
]
image_size = (1024, 1024)
batch_augments = [dict(type='BatchFixedSizePad', size=image_size)]

model = dict(data_preprocessor=dict(batch_augments=batch_augments))

train_dataloader = dict(batch_size=8, num_workers=4)
optim_wrapper = dict(
    type='AmpOptimWrapper',
    optimizer=dict(
        type='SGD', lr=0.02 * 4, momentum=0.9, weight_decay=0.00004))

# The LR above is for 8 GPUs x 8 images; `--auto-scale-lr` rescales it.
auto_scale_lr = dict(base_batch_size=64)
