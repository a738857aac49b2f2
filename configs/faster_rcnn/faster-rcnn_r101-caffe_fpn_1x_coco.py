# Faster R-CNN with a caffe-style ResNet-101 (Detectron2 weights), 1x.
_base_ = './faster-rcnn_r50-caffe_fpn_1x_coco.py'

model = dict(
    backbone=dict(
        depth=101,
        init_cfg=dict(
            type='Pretrained',
            checkpoint='open-mmlab://detectron2/resnet101_caffe')))
