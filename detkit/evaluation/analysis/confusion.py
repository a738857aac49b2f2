"""Confusion matrix of detections against ground truth (mmdetection's
layout, used by ``tools/analysis_tools/confusion_matrix.py`` and the HTML
report).

The matrix is ``(C + 1, C + 1)``: rows are ground-truth classes, columns
predicted classes, and the last row/column is background. Per image, after
an optional per-class NMS at ``nms_iou_thr``, every detection scoring at
least ``score_thr``:

- adds 1 to ``[gt label, predicted label]`` for each ground truth it
  overlaps with IoU >= ``tp_iou_thr`` (a match of the same class makes that
  ground truth found);
- adds 1 to ``[background, predicted label]`` when it overlaps none.

Every ground truth never found adds 1 to ``[its label, background]``.
Ignored (crowd / difficult) ground truths count like the others.
"""
import numpy as np

from ..np_boxes import box_iou_np
from .inputs import predictions


def _per_class_nms(bboxes, scores, labels, iou_thr):
    """Indices kept by torchvision's NMS run separately on each class."""
    import torch
    from torchvision.ops import nms
    keep = []
    for label in np.unique(labels):
        idx = np.flatnonzero(labels == label)
        kept = nms(torch.as_tensor(bboxes[idx]), torch.as_tensor(scores[idx]),
                   iou_thr).numpy()
        keep.append(idx[kept])
    return np.sort(np.concatenate(keep)) if keep else np.zeros(0, int)


def image_confusion(matrix, gt_bboxes, gt_labels, bboxes, scores, labels,
                    score_thr=0.3, tp_iou_thr=0.5, nms_iou_thr=None):
    """Add one image's counts to ``matrix`` (in place).

    Args:
        matrix (ndarray): ``(C + 1, C + 1)`` int64 counts.
        gt_bboxes, gt_labels: ``(G, 4)`` xyxy, ``(G,)``.
        bboxes, scores, labels: the image's ``(K, 4)``, ``(K,)``, ``(K,)``
            detections.
    """
    if nms_iou_thr is not None:
        keep = _per_class_nms(bboxes, scores, labels, nms_iou_thr)
        bboxes, scores, labels = bboxes[keep], scores[keep], labels[keep]
    keep = scores >= score_thr
    bboxes, labels = bboxes[keep], labels[keep]
    hits = box_iou_np(bboxes, gt_bboxes) >= tp_iou_thr  # (D, G)
    det, gt = np.nonzero(hits)
    np.add.at(matrix, (gt_labels[gt], labels[det]), 1)
    np.add.at(matrix[-1], labels[~hits.any(axis=1)], 1)
    found = (hits & (labels[:, None] == gt_labels[None, :])).any(axis=0)
    np.add.at(matrix[:, -1], gt_labels[~found], 1)


def calculate_confusion_matrix(pairs, num_classes, score_thr=0.3,
                               tp_iou_thr=0.5, nms_iou_thr=None):
    """Counts ``(C + 1, C + 1)`` int64 over ``(result, truth)`` pairs (see
    :func:`~detkit.evaluation.analysis.match_results`)."""
    matrix = np.zeros((num_classes + 1, num_classes + 1), dtype=np.int64)
    for result, truth in pairs:
        image_confusion(matrix, truth['bboxes'], truth['labels'],
                        *predictions(result), score_thr=score_thr,
                        tp_iou_thr=tp_iou_thr, nms_iou_thr=nms_iou_thr)
    return matrix
