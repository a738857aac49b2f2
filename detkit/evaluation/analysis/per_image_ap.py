"""Per-image AP: how well a model did on each image, to find its best and
worst images (``tools/analysis_tools/analyze_results.py`` and the HTML
report's gallery).

An image's AP is the Pascal-VOC area AP of :func:`detkit.evaluation.eval_map`
computed on that image alone, averaged over the classes it contains and over
IoU thresholds 0.5, 0.55, ..., 0.95. Every detection counts (no score
threshold); detections of classes the image does not contain change nothing
(``eval_map`` averages over classes with ground truth); an image without
annotated objects scores 0.

``eval_map`` run once per threshold costs ~50 ms an image, minutes for a
5,000-image test set. The matching it does (``match_detections``: each
detection, in descending score order, takes its best-IoU ground truth when
that IoU reaches the threshold and the box is not taken yet; a hit on an
ignored box counts neither way; anything else is a false positive) depends
on the threshold only through ``best IoU >= threshold``, so below it runs
once per class with the thresholds as a vector, and the curves go through
the same :func:`~detkit.evaluation.average_precision`.
tests/test_evaluation/test_analysis_per_image_ap.py checks the result equals
``eval_map`` threshold by threshold.
"""
import numpy as np

from ..mean_ap import average_precision
from ..np_boxes import box_iou_np
from .inputs import predictions

IOU_THRS = np.linspace(.5, .95, 10)
_EPS = np.finfo(np.float32).eps  # eval_map's guard against division by 0


def _class_aps(ious, scores, gt_ignored, iou_thrs):
    """AP ``(S,)`` of one class's ``K`` detections against its ``G`` ground
    truths (at least one not ignored) at each of the ``S`` thresholds.

    Args:
        ious (ndarray): ``(K, G)``.
        scores (ndarray): ``(K,)``.
        gt_ignored (ndarray): ``(G,)`` bool.
    """
    num_thrs = len(iou_thrs)
    if not len(scores):
        return np.zeros(num_thrs)
    best_iou, best_gt = ious.max(axis=1), ious.argmax(axis=1)
    order = np.argsort(-scores, kind='stable')
    tp = np.zeros((num_thrs, len(order)))
    fp = np.zeros((num_thrs, len(order)))
    taken = np.zeros((num_thrs, len(gt_ignored)), dtype=bool)
    for j, i in enumerate(order):
        hit = best_iou[i] >= iou_thrs  # (S,)
        gt = best_gt[i]
        if gt_ignored[gt]:
            fp[:, j] = ~hit
            continue
        first = hit & ~taken[:, gt]
        taken[:, gt] |= first
        tp[:, j], fp[:, j] = first, ~first
    tp, fp = np.cumsum(tp, axis=1), np.cumsum(fp, axis=1)
    recalls = tp / np.maximum(float((~gt_ignored).sum()), _EPS)
    precisions = tp / np.maximum(tp + fp, _EPS)
    return np.atleast_1d(average_precision(recalls, precisions, 'area'))


def image_map(result, truth, num_classes, iou_thrs=IOU_THRS):
    """Mean over ``iou_thrs`` of the image's VOC AP (0 when the image has
    no annotated object).

    Args:
        result (dict): one results-file entry (``pred_instances``).
        truth (dict): its ground truth (``bboxes``, ``labels``, ``ignore``).
        num_classes (int): classes of the dataset.
    """
    bboxes, scores, labels = predictions(result)
    gt_labels, ignore = truth['labels'], truth['ignore']
    iou_thrs = np.asarray(iou_thrs, dtype=np.float64)
    # One IoU matrix for the image, sliced per class (the same numbers as
    # per-class calls, at a fraction of the cost).
    ious = box_iou_np(bboxes, truth['bboxes'])  # (K, G)
    per_class = []
    for c in range(num_classes):
        if not ((gt_labels == c) & ~ignore).any():
            continue
        # eval_map's order: the class's kept boxes, then its ignored ones.
        mine = [np.flatnonzero((gt_labels == c) & ~ignore),
                np.flatnonzero((gt_labels == c) & ignore)]
        idx = np.concatenate(mine)
        dets = labels == c
        per_class.append(_class_aps(ious[dets][:, idx], scores[dets],
                                    ignore[idx], iou_thrs))
    if not per_class:
        return 0.0
    aps = np.stack(per_class)  # (classes with ground truth, S)
    return float(np.mean([aps[:, s].mean() for s in range(len(iou_thrs))]))


def rank_images(pairs, num_classes):
    """``[(AP, result, truth), ...]`` over ``(result, truth)`` pairs in
    ascending AP (ties: input order)."""
    scored = [(image_map(r, t, num_classes), i, r, t)
              for i, (r, t) in enumerate(pairs)]
    scored.sort(key=lambda item: (item[0], item[1]))
    return [(ap, r, t) for ap, _, r, t in scored]
