"""Evaluation: COCO and Pascal VOC metrics, AP and proposal recall."""
from .coco_metric import CocoMetric
from .mean_ap import average_precision, eval_map, match_detections
from .np_boxes import box_iou_np
from .recall import average_recalls, eval_recalls
from .voc_metric import VOCMetric

__all__ = [
    'CocoMetric', 'VOCMetric', 'eval_map', 'average_precision',
    'match_detections', 'eval_recalls', 'average_recalls', 'box_iou_np'
]
