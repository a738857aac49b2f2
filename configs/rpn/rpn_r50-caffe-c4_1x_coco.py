# RPN on the stride-16 "C4" feature of a caffe-style ResNet-50, 12 epochs.
_base_ = [
    '../_base_/models/rpn_r50-caffe-c4.py',
    '../_base_/datasets/coco_detection.py',
    '../_base_/schedules/schedule_1x.py', '../_base_/default_runtime.py'
]

val_evaluator = dict(metric='proposal_fast')
test_evaluator = val_evaluator
