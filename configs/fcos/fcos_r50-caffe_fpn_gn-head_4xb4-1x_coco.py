# FCOS R-50 1x with 4 images per GPU (the schedule assumes 4 GPUs).
_base_ = 'fcos_r50-caffe_fpn_gn-head_1x_coco.py'

train_dataloader = dict(batch_size=4, num_workers=4)
