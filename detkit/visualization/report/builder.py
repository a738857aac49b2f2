"""Build the evaluation report: one self-contained HTML page that says how
good a model is, where it fails and on which images.

Every number comes from :mod:`detkit.evaluation.analysis`, the code the
command-line tools run: the evaluator's own COCOeval arrays (12 numbers,
per-class AP, precision-recall curves, per-image matches), the re-runs of
the same COCOeval for the error breakdown, ``confusion_matrix.py``'s matrix
and ``analyze_results.py``'s per-image AP ranking. With a ``VOCMetric``
evaluator the per-class numbers and curves come from ``eval_map`` (the
function VOCMetric runs), and the sections that need COCO's arrays say so.
"""
import datetime
import os
import os.path as osp
import time

import numpy as np

from detkit.evaluation.analysis import (best_f1_threshold,
                                        calculate_confusion_matrix,
                                        predictions, rank_images)
from . import gallery, sections
from .glance import glance_section
from .html import page
from .numbers import gather
from .training import curves, load_scalars

MAX_GALLERY = 50  # images per side, whatever --topk asks (page size)


def _gallery_items(part, classes, score_thr, painters):
    items = []
    for ap, result, truth in part:
        picture, readable = gallery.draw_pair(truth, result, classes,
                                              score_thr, painters)
        scores = predictions(result)[1]
        items.append(dict(uri=gallery.jpeg_data_uri(picture), ap=ap,
                          name=osp.basename(truth['img_path']),
                          num_gts=int((~truth['ignore']).sum()),
                          num_preds=int((scores >= score_thr).sum()),
                          readable=readable))
    return items


def build_report(pairs, classes, metric_objects, metrics, info=None,
                 scalars=None, score_thr=0.3, topk=12, tp_iou_thr=0.5):
    """The report page as a string.

    Args:
        pairs (list): ``(result, truth)`` per image (``match_results``).
        classes (Sequence[str]): the dataset's classes.
        metric_objects (list): the evaluator's metrics after evaluating
            these results (``Evaluator.metrics``).
        metrics (dict): what the evaluation returned.
        info (dict): header fields: ``config``, ``checkpoint``, ``dataset``.
        scalars (str, optional): a run's ``scalars.json`` for the training
            curves.
        score_thr (float): for the confusion matrix and drawn predictions.
        topk (int): worst and best images in the gallery (at most
            :data:`MAX_GALLERY` each).
        tp_iou_thr (float): the confusion matrix's IoU for a match.
    """
    start = time.perf_counter()
    classes = list(classes)
    info = dict(info or {})
    kind, numbers = gather(metric_objects, metrics, pairs, classes)
    matches = numbers['matches']
    thresholds = overall_thr = None
    if matches is not None:
        thresholds = [best_f1_threshold(m['scores'], m['is_tp'], m['num_gts'])
                      for m in matches]
        scores = np.concatenate([m['scores'] for m in matches])
        order = np.argsort(-scores, kind='mergesort')
        is_tp = np.concatenate([m['is_tp'] for m in matches])[order]
        overall_thr = best_f1_threshold(scores[order], is_tp,
                                        sum(m['num_gts'] for m in matches))
    matrix = calculate_confusion_matrix(pairs, len(classes), score_thr,
                                        tp_iou_thr)
    ranked = rank_images(pairs, len(classes))
    gt_counts = np.bincount(
        np.concatenate([t['labels'] for _, t in pairs] + [np.zeros(0, int)]),
        minlength=len(classes))
    shown = max(1, min(topk, MAX_GALLERY))
    painters = gallery.painters()
    worst = _gallery_items(ranked[:shown], classes, score_thr, painters)
    best = _gallery_items(ranked[::-1][:shown], classes, score_thr, painters)

    aps = [(r['AP50'], r['AP75']) for r in numbers['rows']]
    parts = [
        glance_section(classes, numbers, matrix, gt_counts, ranked,
                       overall_thr, kind),
        sections.metrics_section(numbers['summary'], kind),
        sections.classes_section(classes, numbers['rows'], thresholds,
                                 numbers.get('reason')),
        (sections.voc_pr_section(classes, numbers) if kind == 'voc' else
         sections.pr_section(classes, numbers['curves'], aps,
                             numbers.get('reason'))),
        sections.confusion_section(classes + ['background'], matrix,
                                   score_thr, tp_iou_thr),
        sections.errors_section(classes, numbers['breakdown']),
        sections.scores_section(classes, matches, thresholds, overall_thr),
        sections.gallery_section(worst, best, [a for a, _, _ in ranked],
                                 score_thr, shown if topk > shown else 0),
        _training(scalars)
    ]
    num_gts = sum(len(t['labels']) for _, t in pairs)
    num_preds = sum(len(predictions(r)[1]) for r, _ in pairs)
    meta = [('config', info.get('config', '?')),
            ('checkpoint', info.get('checkpoint', '?')),
            ('dataset', info.get('dataset', '?')), ('images', len(pairs)),
            ('ground-truth boxes', num_gts), ('predicted boxes', num_preds),
            ('date', datetime.datetime.now().strftime('%Y-%m-%d %H:%M')),
            ('versions', _versions())]
    nav = [('glance', 'At a glance'), ('metrics', 'Metrics'),
           ('classes', 'Per class'), ('pr', 'PR curves'),
           ('confusion', 'Confusion'), ('errors', 'Errors'),
           ('scores', 'Scores'), ('gallery', 'Images'),
           ('training', 'Training')]
    title = f'Evaluation report: {info.get("config", "detector")}'
    footer = (f'Written by detkit in {time.perf_counter() - start:.1f} s. '
              'Self-contained: opens offline, nothing is fetched.')
    return page(title, meta, nav, parts, footer)


def _training(scalars):
    if scalars is None:
        return sections.training_section({}, {}, None)
    if not osp.isfile(scalars):
        return sections.training_section({}, {}, f'No training log: '
                                         f'{scalars} does not exist.')
    losses, metrics = curves(*load_scalars(scalars))
    return sections.training_section(losses, metrics, scalars)


def _versions():
    import mmengine
    import torch

    import detkit
    return (f'detkit {detkit.__version__}, torch {torch.__version__}, '
            f'mmengine {mmengine.__version__}')


def describe_dataset(dataset):
    """``'<dataset class> <annotation file>'`` for the header."""
    ann = getattr(dataset, 'ann_file', '') or ''
    return f'{type(dataset).__name__} {ann}'.strip()


def write_report(path, html):
    """Write the page atomically (temp file + rename); returns its size in
    bytes."""
    folder = osp.dirname(osp.abspath(path))
    os.makedirs(folder, exist_ok=True)
    tmp = f'{path}.tmp{os.getpid()}'
    with open(tmp, 'w', encoding='utf-8') as f:
        f.write(html)
    os.replace(tmp, path)
    return osp.getsize(path)
