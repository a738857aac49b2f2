# RetinaNet with a caffe-style ResNet-101 (Detectron2 weights); otherwise
# retinanet_r50-caffe_fpn_ms-3x_coco.py.
_base_ = './retinanet_r50-caffe_fpn_ms-3x_coco.py'

model = dict(
    backbone=dict(
        depth=101,
        init_cfg=dict(
            type='Pretrained',
            checkpoint='open-mmlab://detectron2/resnet101_caffe')))
