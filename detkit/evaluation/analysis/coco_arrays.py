"""Numbers read from the COCOeval object of a :class:`CocoMetric` run: the
12 summary numbers, per-class AP / recall and precision-recall curves.

Nothing here matches boxes again: every value is a view of the arrays that
``COCOeval.accumulate`` filled for the evaluation ``tools/test.py`` printed.

- ``eval['precision']``: ``(T, R, K, A, M)``, the interpolated precision at
  IoU threshold ``params.iouThrs[t]``, recall threshold
  ``params.recThrs[r]`` (0, 0.01, ..., 1), class ``k``, area range ``a``
  (all, small, medium, large) and detections per image ``params.maxDets[m]``;
  -1 where the class has no ground truth;
- ``eval['recall']``: ``(T, K, A, M)``, the highest recall reached.

An AP is the mean of a slice's entries that are not -1, which is how
``COCOeval.summarize`` turns the same array into ``stats``. The analyses use
area "all" and the last ``maxDets`` (CocoMetric's box AP setting).
"""
import numpy as np

_AREAS = ('all', 'small', 'medium', 'large')


def iou_index(coco_eval, iou):
    """Index of ``iou`` in ``params.iouThrs``, or None when it was not
    evaluated."""
    hits = np.flatnonzero(np.isclose(coco_eval.params.iouThrs, iou))
    return int(hits[0]) if hits.size else None


def mean_valid(values):
    """Mean of the entries that are not -1 (nan when there are none)."""
    values = np.asarray(values)
    values = values[values > -1]
    return float(values.mean()) if values.size else float('nan')


def coco_summary(coco_eval):
    """The 12 numbers of ``COCOeval.summarize`` (``stats``) as ``[(key,
    description, value), ...]`` with mmdetection's key names."""
    max_dets = list(coco_eval.params.maxDets)
    last = max_dets[-1]
    keys = (['mAP', 'mAP_50', 'mAP_75', 'mAP_s', 'mAP_m', 'mAP_l'] +
            [f'AR@{m}' for m in max_dets] +
            [f'AR_{a}@{last}' for a in ('s', 'm', 'l')])
    thrs = coco_eval.params.iouThrs
    span = f'{thrs[0]:.2f}:{thrs[-1]:.2f}'
    # summarize() reads the first AP at maxDets=100 and the others at the
    # last maxDets.
    texts = ([f'AP, IoU={span}, area=all, maxDets=100'] +
             [f'AP, IoU={t}, area=all, maxDets={last}'
              for t in ('0.50', '0.75')] +
             [f'AP, IoU={span}, area={a}, maxDets={last}'
              for a in _AREAS[1:]] +
             [f'AR, IoU={span}, area=all, maxDets={m}' for m in max_dets] +
             [f'AR, IoU={span}, area={a}, maxDets={last}'
              for a in _AREAS[1:]])
    return [(k, t, float(v))
            for k, t, v in zip(keys, texts, coco_eval.stats)]


def _counts(coco_eval):
    """Ground truths (not crowd / ignored) and detections per class over
    the evaluated images: two ``(K,)`` int arrays."""
    p = coco_eval.params
    column = {cat: k for k, cat in enumerate(p.catIds)}
    num_gts = np.zeros(len(p.catIds), dtype=np.int64)
    num_dets = np.zeros(len(p.catIds), dtype=np.int64)
    for img_id in p.imgIds:
        for ann in coco_eval.cocoGt.imgToAnns.get(img_id, []):
            k = column.get(ann['category_id'])
            if k is not None and not (ann.get('iscrowd', 0)
                                      or ann.get('ignore', 0)):
                num_gts[k] += 1
        for ann in coco_eval.cocoDt.imgToAnns.get(img_id, []):
            k = column.get(ann['category_id'])
            if k is not None:
                num_dets[k] += 1
    return num_gts, num_dets


def class_metrics(coco_eval):
    """Per class (in ``params.catIds`` order): ``dict(num_gts, num_dets,
    AP, AP50, AP75, AP_s, AP_m, AP_l, recall50, AR)``; nan where the class
    has no ground truth (or the IoU was not evaluated).

    ``recall50`` is the highest recall at IoU 0.5 (the share of objects
    found at all), ``AR`` the mean of the highest recalls over the IoU
    thresholds.
    """
    precision = coco_eval.eval['precision']
    recall = coco_eval.eval['recall']
    t50, t75 = iou_index(coco_eval, .5), iou_index(coco_eval, .75)
    num_gts, num_dets = _counts(coco_eval)
    rows = []
    for k in range(precision.shape[2]):
        row = dict(num_gts=int(num_gts[k]), num_dets=int(num_dets[k]),
                   AP=mean_valid(precision[:, :, k, 0, -1]))
        for name, t in (('AP50', t50), ('AP75', t75)):
            row[name] = (mean_valid(precision[t, :, k, 0, -1])
                         if t is not None else float('nan'))
        for name, a in (('AP_s', 1), ('AP_m', 2), ('AP_l', 3)):
            row[name] = (mean_valid(precision[:, :, k, a, -1])
                         if precision.shape[3] > a else float('nan'))
        row['recall50'] = (mean_valid(recall[t50, k, 0, -1])
                           if t50 is not None else float('nan'))
        row['AR'] = mean_valid(recall[:, k, 0, -1])
        rows.append(row)
    return rows


def pr_curves(coco_eval, iou):
    """``(recall_thresholds (R,), precision (K, R))`` at IoU ``iou``, area
    all, last maxDets (COCOeval's interpolated precision: 0 beyond the
    highest recall reached, -1 for a class without ground truth); None when
    ``iou`` was not evaluated."""
    t = iou_index(coco_eval, iou)
    if t is None:
        return None
    precision = coco_eval.eval['precision'][t, :, :, 0, -1]  # (R, K)
    return np.asarray(coco_eval.params.recThrs), precision.T.copy()
