# Faster R-CNN R-50 FPN 1x in mixed precision (needs a GPU).
_base_ = './faster-rcnn_r50_fpn_1x_coco.py'

optim_wrapper = dict(type='AmpOptimWrapper')
