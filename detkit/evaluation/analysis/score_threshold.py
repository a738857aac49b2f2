"""True and false positives by score, and the score threshold that
maximises F1, per class, from the per-image matches of a :class:`CocoMetric`
run (``COCOeval.evalImgs``: which detection took which ground truth).

The counting is ``COCOeval.accumulate``'s at one IoU threshold, area "all"
and the last ``maxDets``: per image a class's detections in score order up
to ``maxDets``; a detection is a true positive when it matched a ground
truth, a false positive when it matched none, and left out when it matched
a crowd region (``dtIgnore``); ground truths that are not crowd are the
objects to find. Keeping the detections scoring at least ``s`` gives
precision ``TP / (TP + FP)``, recall ``TP / objects`` and
``F1 = 2 TP / (objects + TP + FP)``; the best ``s`` is taken among the
detections' own scores (ties kept together).
"""
import numpy as np

from .coco_arrays import iou_index


def detection_matches(coco_eval, iou=.5):
    """Per class (``params.catIds`` order): ``dict(scores (D,), is_tp (D,)
    bool, num_gts)`` in descending score order.

    Returns None when the evaluator kept no per-image matches (the
    ``faster-coco-eval`` backend computes them in C++ and does not expose
    them) or ``iou`` was not evaluated.
    """
    p = coco_eval.params
    t = iou_index(coco_eval, iou)
    evals = getattr(coco_eval, 'evalImgs', None)
    num_imgs, num_areas = len(p.imgIds), len(p.areaRng)
    if (t is None or not isinstance(evals, list)
            or len(evals) != len(p.catIds) * num_areas * num_imgs):
        return None
    max_det = p.maxDets[-1]
    classes = []
    for k in range(len(p.catIds)):
        start = k * num_areas * num_imgs  # area "all" comes first
        images = [e for e in evals[start:start + num_imgs] if e is not None]
        if images:
            scores = np.concatenate([e['dtScores'][:max_det] for e in images])
            matched = np.concatenate(
                [np.asarray(e['dtMatches'])[t, :max_det] > 0 for e in images])
            ignored = np.concatenate(
                [np.asarray(e['dtIgnore'])[t, :max_det] > 0 for e in images])
            num_gts = int(sum((np.asarray(e['gtIgnore']) == 0).sum()
                              for e in images))
        else:
            scores, matched = np.zeros(0), np.zeros(0, bool)
            ignored, num_gts = np.zeros(0, bool), 0
        order = np.argsort(-np.asarray(scores, dtype=np.float64),
                           kind='mergesort')  # accumulate's sort
        keep = order[~ignored[order]]
        classes.append(dict(scores=np.asarray(scores, np.float64)[keep],
                            is_tp=matched[keep], num_gts=num_gts))
    return classes


def best_f1_threshold(scores, is_tp, num_gts):
    """The score threshold that maximises F1 on one class.

    Args:
        scores (ndarray): ``(D,)`` in descending order.
        is_tp (ndarray): ``(D,)`` bool.
        num_gts (int): objects to find.

    Returns:
        dict(threshold, f1, precision, recall, tp, fp); ``threshold`` is
        None (and the rest 0) when there is no true positive. The highest
        threshold wins a tie.
    """
    tp = np.cumsum(is_tp)
    fp = np.cumsum(~is_tp)
    # Only cut where the next score differs, so equal scores stay together.
    cuts = np.flatnonzero(np.r_[scores[1:] != scores[:-1], True]) if len(
        scores) else np.zeros(0, int)
    if not len(cuts) or num_gts == 0 or tp[-1] == 0:
        return dict(threshold=None, f1=0.0, precision=0.0, recall=0.0, tp=0,
                    fp=int(fp[-1]) if len(fp) else 0)
    f1 = 2 * tp[cuts] / (num_gts + tp[cuts] + fp[cuts])
    i = cuts[int(np.argmax(f1))]
    return dict(threshold=float(scores[i]), f1=float(f1.max()),
                precision=float(tp[i] / (tp[i] + fp[i])),
                recall=float(tp[i] / num_gts), tp=int(tp[i]), fp=int(fp[i]))
