# RPN with a ResNet-101 backbone; otherwise rpn_r50_fpn_1x_coco.py.
_base_ = './rpn_r50_fpn_1x_coco.py'

model = dict(
    backbone=dict(
        depth=101,
        init_cfg=dict(type='Pretrained',
                      checkpoint='torchvision://resnet101')))
