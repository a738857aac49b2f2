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
import math
import os
import os.path as osp
import time

import numpy as np

from detkit.evaluation import eval_map
from detkit.evaluation.analysis import (best_f1_threshold,
                                        calculate_confusion_matrix,
                                        class_metrics, coco_eval_of,
                                        coco_summary, detection_matches,
                                        error_breakdown, pr_curves,
                                        predictions, rank_images,
                                        voc_metric_of)
from . import gallery, sections
from .html import page
from .training import curves, load_scalars

MAX_GALLERY = 50  # images per side, whatever --topk asks (page size)


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
    _, per_class = eval_map(dets, anns, iou_thr=iou, eval_mode=metric.eval_mode,
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


def _glance(classes, numbers, matrix, ranked, overall_thr, kind):
    items = []
    rows = numbers['rows']
    if kind == 'coco':
        stats = {k: v for k, _, v in numbers['summary']}
        items.append(f'<span class="big">mAP {stats["mAP"]:.3f}</span>'
                     f'AP50 {stats["mAP_50"]:.3f} · AP75 '
                     f'{stats["mAP_75"]:.3f}')
    elif numbers['summary']:
        key, _, value = numbers['summary'][0]
        items.append(f'<span class="big">{key} {value:.3f}</span>')
    scored = sorted((r['AP'], name) for name, r in zip(classes, rows)
                    if math.isfinite(r['AP']))
    if len(scored) > 1:
        side = min(3, len(scored) // 2)
        worst = ', '.join(f'<b>{n}</b> {ap:.3f}' for ap, n in scored[:side])
        best = ', '.join(f'<b>{n}</b> {ap:.3f}'
                         for ap, n in scored[::-1][:side])
        items.append(f'Best classes (AP): {best}. Weakest: {worst}.')
    breakdown = numbers['breakdown']
    if breakdown is not None:
        losses = {k: breakdown['overall'][k] for k in (
            'localisation', 'confusion', 'background', 'missed')}
        top = max(losses, key=losses.get)
        items.append('AP at IoU 0.5 lost to: ' + ', '.join(
            f'{"<b>" if k == top else ""}{k} {v:.3f}{"</b>" if k == top else ""}'
            for k, v in losses.items()) + f' (largest: <b>{top}</b>).')
    off = matrix[:-1, :-1].copy()
    np.fill_diagonal(off, 0)
    if off.sum():
        i, j = np.unravel_index(int(off.argmax()), off.shape)
        items.append(f'Most frequent confusion: ground truth <b>{classes[i]}'
                     f'</b> detected as <b>{classes[j]}</b> ({off[i, j]} '
                     'times).')
    found = np.diag(matrix)[:-1]
    gts = matrix[:-1].sum(axis=1)
    if gts.sum():
        missed = matrix[:-1, -1]
        k = int(np.argmax(missed / np.maximum(gts, 1)))
        items.append(f'{int(found.sum())} of {int(gts.sum())} ground truths '
                     'found by a detection of their class above the score '
                     f'threshold; most often missed: <b>{classes[k]}</b> '
                     f'({int(missed[k])} of {int(gts[k])}). '
                     f'{int(matrix[-1].sum())} detections on background.')
    if overall_thr is not None and overall_thr['threshold'] is not None:
        items.append(f'Score threshold maximising F1 over all classes: '
                     f'<b>{overall_thr["threshold"]:.2f}</b> (F1 '
                     f'{overall_thr["f1"]:.3f}).')
    aps = np.array([ap for ap, _, _ in ranked])
    if len(aps):
        items.append(f'{int((aps < .5).sum())} of {len(aps)} images have an '
                     f'image AP below 0.5; the worst is <b>'
                     f'{osp.basename(ranked[0][2]["img_path"])}</b> '
                     f'({aps[0]:.3f}).')
    body = '<ul class="glance">' + ''.join(f'<li>{i}</li>' for i in items)
    return sections.section('glance', 'At a glance', '', body + '</ul>')


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
    coco_eval = coco_eval_of(metric_objects)
    voc = voc_metric_of(metric_objects)
    if coco_eval is not None:
        kind, numbers = 'coco', _coco_numbers(coco_eval, classes)
    elif voc is not None:
        kind, numbers = 'voc', _voc_numbers(voc, metrics, pairs, classes)
    else:
        kind = 'none'
        numbers = dict(summary=[(k, 'evaluator', float(v))
                                for k, v in metrics.items()
                                if isinstance(v, (int, float))],
                       rows=[], curves={}, breakdown=None, matches=None)
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
    shown = max(1, min(topk, MAX_GALLERY))
    painters = gallery.painters()
    worst = _gallery_items(ranked[:shown], classes, score_thr, painters)
    best = _gallery_items(ranked[::-1][:shown], classes, score_thr, painters)

    parts = [_glance(classes, numbers, matrix, ranked, overall_thr, kind),
             sections.metrics_section(numbers['summary'], kind)]
    if numbers['rows']:
        parts.append(sections.classes_section(classes, numbers['rows'],
                                              thresholds))
        aps = [(r['AP50'], r.get('AP75', float('nan')))
               for r in numbers['rows']]
        curves_ = numbers['curves']
        if kind == 'voc':
            curves_ = {}
        parts.append(sections.pr_section(classes, curves_, aps) if kind !=
                     'voc' else _voc_pr(classes, numbers))
    parts += [
        sections.confusion_section(classes + ['background'], matrix,
                                   score_thr, tp_iou_thr),
        sections.errors_section(classes, numbers['breakdown']),
        sections.scores_section(classes, matches, thresholds or [],
                                overall_thr) if matches is not None else
        sections.scores_section(classes, None, None, None),
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


def _voc_pr(classes, numbers):
    from . import charts
    plots = []
    for name, (rec, prec), row in zip(classes, numbers['voc_curves'],
                                      numbers['rows']):
        if not rec.size:
            continue
        plots.append(charts.line_chart(
            [dict(xs=rec, ys=prec, color=sections.BLUE, label='IoU 0.50')],
            xlim=(0, 1), ylim=(0, 1.02), title=f'{name}: AP {row["AP"]:.3f}',
            xlabel='recall', ylabel='precision'))
    how = ('Raw precision and recall after each detection in score order '
           '(eval_map, as VOCMetric computes them) at the metric\'s IoU '
           'threshold.')
    body = (sections.note('VOC evaluation: no COCO arrays, so the curves at '
                          'IoU 0.75 are not available.') +
            f'<div class="grid">{"".join(plots)}</div>')
    return sections.section('pr', 'Precision-recall curves', how, body)


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
