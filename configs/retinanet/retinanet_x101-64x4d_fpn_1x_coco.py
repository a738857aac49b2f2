# RetinaNet with ResNeXt-101 64x4d (64 groups of 4 channels in the
# first stage's 3x3 convs); otherwise retinanet_r50_fpn_1x_coco.py.
_base_ = './retinanet_r50_fpn_1x_coco.py'

model = dict(
    backbone=dict(
        type='ResNeXt',
        depth=101,
        groups=64,
        base_width=4,
        num_stages=4,
        out_indices=(0, 1, 2, 3),
        frozen_stages=1,
        norm_cfg=dict(type='BN', requires_grad=True),
        style='pytorch',
        init_cfg=dict(
            type='Pretrained', checkpoint='open-mmlab://resnext101_64x4d')))
