# Faster R-CNN with a caffe-style ResNet-101, 3x multi-scale. As in
# mmdetection, the data preprocessor is not changed: the input keeps the
# RGB mean/std normalisation of faster-rcnn_r50_fpn_ms-3x_coco.py.
_base_ = './faster-rcnn_r50_fpn_ms-3x_coco.py'

model = dict(
    backbone=dict(
        depth=101,
        norm_cfg=dict(requires_grad=False),
        norm_eval=True,
        style='caffe',
        init_cfg=dict(
            type='Pretrained',
            checkpoint='open-mmlab://detectron2/resnet101_caffe')))
