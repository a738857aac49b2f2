"""The per-class numbers a report page shows, gathered from the
evaluator that ran: CocoMetric's COCOeval object (the 12 numbers, per-class
AP and recall, PR curves, the error breakdown, per-image matches), else a
VOCMetric's settings through ``eval_map`` (the function VOCMetric runs),
else only what the evaluator returned, with the reason.

:func:`gather` returns ``(kind, numbers)``: ``kind`` is ``'coco'``,
``'voc'`` or ``'none'``; ``numbers`` a dict with ``summary`` ``[(key,
description, value)]``, ``rows`` (per class, in the dataset's class order),
``curves`` ``{iou: (recall thresholds, precision (K, R))}``, ``breakdown``,
``matches`` (None where not available), and ``voc_curves`` / ``reason``
where they apply.
"""
import math

import numpy as np

from detkit.evaluation import CocoMetric, eval_map
from detkit.evaluation.analysis import (class_metrics, coco_eval_of,
                                        coco_summary, detection_matches,
                                        error_breakdown, pr_curves,
                                        predictions, voc_metric_of)


def gather(metric_objects, metrics, pairs, classes):
    """``(kind, numbers)`` of the evaluation (see the module docstring)."""
    coco_eval = coco_eval_of(metric_objects)
    if coco_eval is not None:
        return 'coco', _coco_numbers(coco_eval, classes)
    voc = voc_metric_of(metric_objects)
    if voc is not None:
        return 'voc', _voc_numbers(voc, metrics, pairs, classes)
    return 'none', _no_numbers(metric_objects, metrics)


def _coco_columns(coco_eval, classes):
    """For each class, its index on COCOeval's category axis (COCOeval sorts
    ``catIds``; the names say which is which)."""
    names = {c['id']: c['name'] for c in coco_eval.cocoGt.dataset[
        'categories']}
    axis = [names[c] for c in coco_eval.params.catIds]
    return [axis.index(name) for name in classes]


def _coco_numbers(coco_eval, classes):
    cols = _coco_columns(coco_eval, classes)
    rows = class_metrics(coco_eval)
    curves_ = {}
    for iou in (.5, .75):
        found = pr_curves(coco_eval, iou)
        if found is not None:
            curves_[iou] = (found[0], found[1][cols])
    breakdown = error_breakdown(coco_eval)
    if breakdown is not None:
        for part in ('stages', 'losses'):
            breakdown[part] = {k: v[cols] for k, v in breakdown[part].items()}
    matches = detection_matches(coco_eval, .5)
    return dict(summary=[(k, d, v) for k, d, v in coco_summary(coco_eval)],
                rows=[rows[c] for c in cols], curves=curves_,
                breakdown=breakdown,
                matches=None if matches is None else [matches[c]
                                                      for c in cols])


def _voc_numbers(metric, metrics, pairs, classes):
    """Per-class AP / recall and raw PR curves from ``eval_map`` with the
    metric's settings (what VOCMetric computed)."""
    dets, anns = [], []
    for result, truth in pairs:
        bboxes, scores, labels = predictions(result)
        dets.append([np.hstack([bboxes[labels == c], scores[labels == c,
                                                            None]])
                     for c in range(len(classes))])
        keep = ~truth['ignore']
        anns.append(dict(bboxes=truth['bboxes'][keep],
                         labels=truth['labels'][keep],
                         bboxes_ignore=truth['bboxes'][~keep],
                         labels_ignore=truth['labels'][~keep]))
    iou = metric.iou_thrs[0]
    _, per_class = eval_map(dets, anns, iou_thr=iou,
                            eval_mode=metric.eval_mode,
                            use_legacy_coordinate=True)
    rows = [dict(num_gts=r['num_gts'], num_dets=r['num_dets'],
                 AP=r['ap'] if r['num_gts'] else float('nan'),
                 AP50=r['ap'] if r['num_gts'] and math.isclose(iou, .5)
                 else float('nan'), AP75=float('nan'),
                 recall50=float(r['recall'][-1]) if r['recall'].size and
                 r['num_gts'] and math.isclose(iou, .5) else float('nan'))
            for r in per_class]
    return dict(summary=[(k, 'VOCMetric', float(v))
                         for k, v in metrics.items()], rows=rows, curves={},
                voc_curves=[(r['recall'], r['precision']) for r in per_class],
                breakdown=None, matches=None)


def _no_numbers(metric_objects, metrics):
    """What the page can show without COCO arrays or VOCMetric."""
    if any(isinstance(m, CocoMetric) for m in metric_objects):
        reason = ('CocoMetric had no detection to evaluate, so there are no '
                  'COCO arrays (every AP is 0).')
    else:
        reason = ('The evaluator is neither CocoMetric(metric="bbox") nor '
                  'VOCMetric(metric="mAP"); only the numbers it returned are '
                  'shown.')
    summary = [(k, 'evaluator', float(v)) for k, v in metrics.items()
               if isinstance(v, (int, float))]
    return dict(summary=summary, rows=[], curves={}, breakdown=None,
                matches=None, reason=reason)
