# Faster R-CNN R-50 FPN 1x with online hard example mining: the RoI head
# trains on the 512 proposals of highest loss instead of a random sample.
_base_ = './faster-rcnn_r50_fpn_1x_coco.py'

model = dict(train_cfg=dict(rcnn=dict(sampler=dict(type='OHEMSampler'))))
