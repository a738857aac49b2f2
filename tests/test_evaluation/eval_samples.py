"""Hand-made predictions and ground truth with known AP (shared by the
evaluation tests).

One image, class 0 (``cat``):

- ground truth A = [0, 0, 10, 10], B = [20, 20, 30, 30]; an ignored (crowd /
  difficult) region C = [40, 0, 60, 20];
- predictions, by score: P1 = A exactly (0.9), P4 = C exactly (0.85, must be
  ignored), P2 = [50, 50, 60, 60] hitting nothing (0.8), P3 = B shifted down
  by 2 px (0.7): IoU 80/120 = 2/3 (0.692 with VOC's +1 pixel convention).

So the detections are TP, (ignored), FP, TP-or-FP, i.e. precision/recall
points (1, 0.5), (0.5, 0.5), (2/3, 1) when P3 counts.
"""
import torch

GT_BOXES = [[0, 0, 10, 10], [20, 20, 30, 30]]
IGNORED_BOXES = [[40, 0, 60, 20]]
PRED_BOXES = [[0, 0, 10, 10], [40, 0, 60, 20], [50, 50, 60, 60],
              [20, 22, 30, 32]]
PRED_SCORES = [0.9, 0.85, 0.8, 0.7]


def sample(img_id=1, gt_boxes=GT_BOXES, gt_labels=None,
           ignored_boxes=IGNORED_BOXES, ignored_labels=None,
           pred_boxes=PRED_BOXES, scores=PRED_SCORES, pred_labels=None,
           ori_shape=(100, 100)):
    """A data sample as mmengine's Evaluator hands it to a metric (the
    ``to_dict()`` of a DetDataSample)."""

    def instances(boxes, labels, **extra):
        labels = [0] * len(boxes) if labels is None else labels
        return dict(bboxes=torch.tensor(boxes, dtype=torch.float32).reshape(
            -1, 4), labels=torch.tensor(labels, dtype=torch.int64), **extra)

    return dict(
        img_id=img_id,
        ori_shape=ori_shape,
        gt_instances=instances(gt_boxes, gt_labels),
        ignored_instances=instances(ignored_boxes, ignored_labels),
        pred_instances=instances(
            pred_boxes, pred_labels,
            scores=torch.tensor(scores, dtype=torch.float32)))
