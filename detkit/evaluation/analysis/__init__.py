"""Result analyses shared by the command-line tools
(``tools/analysis_tools/{confusion_matrix,analyze_results,eval_metric,
report}.py``) and the HTML report: one implementation of each number.
"""
from .coco_arrays import (class_metrics, coco_summary, iou_index, mean_valid,
                          pr_curves)
from .collect import ResultsCollector
from .confusion import calculate_confusion_matrix, image_confusion
from .error_breakdown import LOSSES, STAGES, error_breakdown
from .evaluate import (coco_eval_of, evaluate_results, forget_coco_evals,
                       voc_metric_of)
from .inputs import as_array, ground_truth, match_results, predictions
from .per_image_ap import IOU_THRS, image_map, rank_images
from .score_threshold import best_f1_threshold, detection_matches

__all__ = [
    'as_array', 'predictions', 'ground_truth', 'match_results',
    'calculate_confusion_matrix', 'image_confusion', 'IOU_THRS', 'image_map',
    'rank_images', 'coco_summary', 'class_metrics', 'pr_curves', 'iou_index',
    'mean_valid', 'error_breakdown', 'STAGES', 'LOSSES', 'detection_matches',
    'best_f1_threshold', 'evaluate_results', 'coco_eval_of', 'voc_metric_of',
    'forget_coco_evals',
    'ResultsCollector'
]
