# RPN, ResNet-50 FPN, 12 epochs. An RPN is evaluated by proposal recall:
# AR@100, AR@300, AR@1000 over IoU 0.5:0.95 with greedy one-to-one
# matching.
_base_ = [
    '../_base_/models/rpn_r50_fpn.py', '../_base_/datasets/coco_detection.py',
    '../_base_/schedules/schedule_1x.py', '../_base_/default_runtime.py'
]
val_evaluator = dict(metric='proposal_fast')
test_evaluator = val_evaluator
