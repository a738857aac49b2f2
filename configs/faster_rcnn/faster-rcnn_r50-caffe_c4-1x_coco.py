# Faster R-CNN C4 (caffe-style ResNet-50, ResNet stage 4 as the RoI
# head), 12 epochs.
_base_ = [
    '../_base_/models/faster-rcnn_r50-caffe-c4.py',
    '../_base_/datasets/coco_detection.py',
    '../_base_/schedules/schedule_1x.py', '../_base_/default_runtime.py'
]
