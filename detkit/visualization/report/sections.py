"""One function per section of the report page. Each takes numbers that
:mod:`.builder` got from :mod:`detkit.evaluation.analysis` and returns
HTML; none computes a metric itself."""
import math
from html import escape

import numpy as np

from . import charts
from .html import cell, note, num, section, table

BLUE, LIGHT_BLUE, ORANGE = '#0969da', '#8cc4ff', '#e16f00'
GREEN, RED, PURPLE, AMBER, GRAY = ('#2da44e', '#cf222e', '#8250df', '#bf8700',
                                   '#8c959f')
LOSS_COLORS = dict(localisation=AMBER, confusion=PURPLE, background=RED,
                   missed=GRAY)


def metrics_section(summary, kind):
    """``summary``: ``[(key, description, value), ...]``."""
    # COCO writes -1 where there is nothing to measure (no large objects).
    rows = [[cell(k, css='name'), cell(d, css='name'),
             cell(v if v != -1 else None)] for k, d, v in summary]
    how = ('The evaluator\'s own numbers, as <code>tools/test.py</code> '
           'prints them (unrounded here; \u2014: nothing to measure, e.g. no '
           'large objects).')
    if kind == 'coco':
        how += (' AP averages precision over recall 0..1 and IoU thresholds '
                '0.50..0.95; AR is the best recall reached; s/m/l: objects '
                'smaller than 32&sup2;, up to 96&sup2;, larger (pixels).')
    body = table(['key', 'meaning', 'value'], rows, 'metrics-table')
    return section('metrics', 'Metrics', how, body)


def classes_section(classes, rows, thresholds, reason=None):
    """``rows``: per class ``dict(num_gts, num_dets, AP, AP50, AP75,
    recall50)`` (values may be nan); ``thresholds``: per class dicts of
    :func:`best_f1_threshold` or None; ``reason``: the note shown when there
    are no rows."""
    if not rows:
        return section('classes', 'Per-class AP', '', note(reason or ''))
    valid = [r['AP'] for r in rows if math.isfinite(r['AP'])]
    lo, hi = (np.percentile(valid, 25), np.percentile(valid, 75)) if len(
        valid) > 3 else (-1, 2)
    body_rows = []
    for k, (name, r) in enumerate(zip(classes, rows)):
        css = ('low' if r['AP'] <= lo else 'high' if r['AP'] >= hi else ''
               ) if math.isfinite(r['AP']) else ''
        best = thresholds[k] if thresholds else None
        body_rows.append([
            cell(name, css='name'), cell(r['num_gts']), cell(r['num_dets']),
            cell(r['AP'], css=css, bar=r['AP']), cell(r['AP50']),
            cell(r['AP75']), cell(r['recall50']),
            cell(best['threshold'] if best else None, 2),
            cell(best['f1'] if best and best['threshold'] is not None
                 else None)
        ])
    headers = ['class', 'GT boxes', 'detections', 'AP', 'AP50', 'AP75',
               'recall@0.5', 'best score thr', 'F1 there']
    order = sorted(range(len(classes)),
                   key=lambda k: -rows[k]['AP'] if math.isfinite(
                       rows[k]['AP']) else 1)
    chart = charts.hbar_chart(
        [classes[k] for k in order],
        [('AP', [rows[k]['AP'] for k in order], BLUE),
         ('AP50', [rows[k]['AP50'] for k in order], LIGHT_BLUE)],
        title='AP per class (best first)', xlabel='AP')
    how = ('Click a column header to sort. <b>recall@0.5</b>: share of the '
           'class\'s objects found at IoU 0.5 by any detection; <b>best '
           'score thr</b>: the score threshold that maximises F1 for the '
           'class (see <a href="#scores">score distribution</a>). Red / '
           'green AP: the lowest / highest quarter of the classes.')
    body = (table(headers, body_rows, 'class-table', sortable=True) +
            f'<div class="grid">{chart}</div>')
    return section('classes', 'Per-class AP', how, body)


def pr_section(classes, curves, aps, reason=None):
    """``curves``: ``{iou: (recall_thresholds, precision (K, R))}`` (class
    order = ``classes``); ``aps``: per class ``(AP50, AP75)``."""
    if not curves:
        return section('pr', 'Precision-recall curves', '', note(
            reason or 'No precision-recall arrays in this evaluation.'))
    styles = {.5: (BLUE, False), .75: (ORANGE, True)}
    plots = []
    for k, name in enumerate(classes):
        series = []
        for iou, (rec, prec) in curves.items():
            if prec[k].size and prec[k].max(initial=-1) > -1:
                color, dashed = styles.get(iou, (GRAY, False))
                series.append(dict(xs=rec, ys=np.maximum(prec[k], 0),
                                   color=color, dashed=dashed,
                                   label=f'IoU {iou:.2f}'))
        ap50, ap75 = aps[k]
        title = f'{name}: AP50 {num(ap50)} · AP75 {num(ap75)}'
        if series:
            plots.append(charts.line_chart(series, xlim=(0, 1), ylim=(0, 1.02),
                                           title=title, xlabel='recall',
                                           ylabel='precision'))
        else:
            plots.append(f'<p class="note">{escape(name)}: no ground truth'
                         '</p>')
    how = ('The evaluator\'s precision at each recall (COCO interpolation: '
           'the best precision at that recall or any higher one), per class '
           'at IoU 0.5 (solid) and 0.75 (dashed). A curve that stays high '
           'and long is good; where it falls to 0 is the highest recall '
           'reached.')
    return section('pr', 'Precision-recall curves', how,
                   f'<div class="grid">{"".join(plots)}</div>')


def voc_pr_section(classes, numbers):
    """Raw precision-recall curves of ``eval_map``
    (``numbers['voc_curves']``)."""
    plots = []
    for name, (rec, prec), row in zip(classes, numbers['voc_curves'],
                                      numbers['rows']):
        if not rec.size:
            continue
        plots.append(charts.line_chart(
            [dict(xs=rec, ys=prec, color=BLUE, label='IoU 0.50')],
            xlim=(0, 1), ylim=(0, 1.02), title=f'{name}: AP {row["AP"]:.3f}',
            xlabel='recall', ylabel='precision'))
    how = ('Raw precision and recall after each detection in score order '
           '(eval_map, as VOCMetric computes them) at the metric\'s IoU '
           'threshold.')
    body = (note('VOC evaluation: no COCO arrays, so the curves at '
                          'IoU 0.75 are not available.') +
            f'<div class="grid">{"".join(plots)}</div>')
    return section('pr', 'Precision-recall curves', how, body)


def confusion_section(names, matrix, score_thr, tp_iou_thr):
    """``names``: classes + ``'background'``; ``matrix``: ``(C+1, C+1)``
    counts, ground-truth rows, prediction columns."""
    n = len(names)
    sums = matrix.sum(axis=1)
    head = ''.join(f'<th>{escape(c)}</th>' for c in names)
    rows = []
    for i in range(n):
        cells = [f'<th class="name">{escape(names[i])}</th>']
        for j in range(n):
            count = int(matrix[i, j])
            share = count / sums[i] if sums[i] else 0.0
            if i == n - 1 and j == n - 1:
                cells.append('<td data-count="0">\u2014</td>')
                continue
            good = i == j
            rgb = (46, 164, 79) if good else (207, 34, 46)
            alpha = 0.08 + 0.82 * share if count else 0
            ink = '#fff' if alpha > 0.55 else '#24292f'
            tip = (f'ground truth {names[i]}, predicted {names[j]}: {count} '
                   f'({share:.0%} of the row)')
            cls = ' class="diag"' if good else ''
            cells.append(
                f'<td{cls} data-count="{count}" title="{escape(tip)}" '
                f'style="background:rgba({rgb[0]},{rgb[1]},{rgb[2]},'
                f'{alpha:.2f});color:{ink}">{count}</td>')
        rows.append('<tr>' + ''.join(cells) + f'<td>{int(sums[i])}</td></tr>')
    body = (f'<table id="confusion" class="heat"><thead><tr>'
            f'<th class="name">ground truth \\ prediction</th>{head}'
            '<th>row total</th></tr></thead><tbody>' + ''.join(rows) +
            '</tbody></table>')
    how = (f'Counts over all images of detections scoring at least '
           f'{score_thr:g} (<code>confusion_matrix.py</code> gives the same '
           'numbers). Each detection adds 1 to [ground-truth class, '
           f'predicted class] for every ground truth it overlaps with IoU '
           f'&ge; {tp_iou_thr:g}, or to the <b>background</b> row when it '
           'overlaps none (a false positive on background); a ground truth '
           'that no detection of its own class overlaps adds 1 to the '
           '<b>background</b> column (missed). Green: correct (diagonal); '
           'red: errors; the darker, the larger the share of the row.')
    return section('confusion', 'Confusion matrix', how, body)


def errors_section(classes, breakdown):
    """``breakdown``: :func:`error_breakdown`'s dict (class order =
    ``classes``) or None."""
    if breakdown is None:
        return section('errors', 'Error breakdown', '', note(
            'The error breakdown needs the COCO evaluation arrays (a '
            'CocoMetric evaluator with IoU thresholds 0.5 and 0.75); this '
            'evaluation has none.'))
    labels = ['all classes'] + list(classes)
    stages, losses, overall = (breakdown['stages'], breakdown['losses'],
                               breakdown['overall'])
    segments = [('AP50', [overall['AP50']] + list(stages['AP50']), GREEN)]
    segments += [(name, [overall[name]] + list(losses[name]),
                  LOSS_COLORS[name]) for name in LOSS_COLORS]
    chart = charts.hbar_chart(labels, segments, width=620, stacked=True,
                              title='Where the AP at IoU 0.5 goes',
                              xlabel='share of a perfect AP (1.0)')
    rows = []
    for k, name in enumerate(labels):
        get = (lambda key: overall[key]) if k == 0 else (
            lambda key, k=k: (stages.get(key, losses.get(key)))[k - 1])
        rows.append([cell(name, css='name')] + [
            cell(get(key)) for key in ('AP75', 'AP50', 'localisation',
                                       'confusion', 'background', 'missed')
        ])
    how = (
        'In the spirit of the COCO analysis tool: the same COCO evaluation '
        'is run again with one kind of error forgiven at a time, and the AP '
        'gained is the AP that error costs. <b>localisation</b> = AP at IoU '
        '0.1 minus AP at 0.5 (boxes roughly in place but not tight enough; '
        'duplicates still count as errors); <b>confusion</b> = AP at IoU 0.1 '
        'when detections on an object of another class are ignored, minus '
        'AP at IoU 0.1; <b>background</b> = AP with every remaining false '
        'positive removed (precision 1 up to the recall reached), minus the '
        'previous; <b>missed</b> = 1 minus that (objects no detection found '
        'even at IoU 0.1). AP50 plus the four add up to 1. A long bar of '
        'one colour says what to fix first.')
    body = (f'<div class="grid">{chart}</div>' + table(
        ['class', 'AP75', 'AP50', 'localisation', 'confusion', 'background',
         'missed'], rows, 'error-table', sortable=True))
    return section('errors', 'Error breakdown', how, body)


def scores_section(classes, matches, thresholds, overall):
    """TP/FP score histograms, overall and per class; ``matches``: per
    class ``dict(scores, is_tp, num_gts)`` or None."""
    if matches is None:
        return section('scores', 'Score distribution', '', note(
            'Score analysis needs the COCO evaluation\'s per-image matches '
            '(CocoMetric with backend="pycocotools"); this evaluation has '
            'none.'))
    scores = np.concatenate([m['scores'] for m in matches])
    is_tp = np.concatenate([m['is_tp'] for m in matches])
    big = charts.histogram(
        [('true positives', scores[is_tp], GREEN),
         ('false positives', scores[~is_tp], RED)], width=460, height=240,
        title='All classes', xlabel='score',
        marker=overall['threshold'] if overall['threshold'] is not None
        else None)
    small = []
    for name, m, best in zip(classes, matches, thresholds):
        thr = best['threshold']
        title = f'{name}: best thr {num(thr, 2)}, F1 {num(best["f1"])}'
        small.append(charts.histogram(
            [('TP', m['scores'][m['is_tp']], GREEN),
             ('FP', m['scores'][~m['is_tp']], RED)], title=title,
            xlabel='score', marker=thr))
    line = ('' if overall['threshold'] is None else
            f'<p>Over all classes, keeping detections scoring at least '
            f'<b>{overall["threshold"]:.2f}</b> maximises F1 '
            f'(<b>{overall["f1"]:.3f}</b>: precision '
            f'{overall["precision"]:.3f}, recall {overall["recall"]:.3f}).'
            '</p>')
    how = ('Scores of the detections the evaluator counted as true positives '
           '(matched a ground truth at IoU 0.5) and false positives, per '
           'class up to its maxDets detections per image. The dashed line is '
           'the score threshold that maximises F1 = 2PR / (P + R), a good '
           'starting point for a deployment threshold. Green far right of '
           'red means scores separate good and bad detections well.')
    return section('scores', 'Score distribution', how,
                   line + f'<div class="grid">{big}</div>'
                   f'<div class="grid">{"".join(small)}</div>')


def gallery_section(worst, best, image_aps, score_thr, capped):
    """``worst`` / ``best``: ``[dict(uri, ap, name, num_gts, num_preds,
    readable), ...]``; ``image_aps``: every image's AP."""

    def figures(items, kind):
        out = []
        for rank, item in enumerate(items, 1):
            missing = '' if item['readable'] else ' (image file not found)'
            out.append(
                f'<figure class="shot" data-kind="{kind}" data-rank="{rank}"'
                f' data-ap="{item["ap"]!r}" '
                f'data-image="{escape(item["name"])}">'
                f'<img src="{item["uri"]}" alt="{escape(item["name"])}">'
                f'<figcaption><b>#{rank} {escape(item["name"])}</b> · image '
                f'AP {item["ap"]:.3f} · {item["num_gts"]} ground truth, '
                f'{item["num_preds"]} predictions &ge; {score_thr:g}'
                f'{missing}</figcaption></figure>')
        return ''.join(out)

    hist = charts.histogram([('images', image_aps, BLUE)], bins=20,
                            width=460, height=200, xlabel='image AP',
                            title='Per-image AP of all images')
    hist = hist.replace('>detections<', '>images<', 1)
    legend = (f'<p>Left: ground truth<span class="swatch" '
              f'style="background:rgb(30,170,60)"></span> · right: '
              f'predictions scoring &ge; {score_thr:g}<span class="swatch" '
              'style="background:rgb(245,130,0)"></span></p>')
    how = ('Each image\'s AP on its own (VOC area AP of its detections '
           'against its ground truth, averaged over its classes and IoU '
           '0.50..0.95; <code>analyze_results.py</code> ranks the same way; '
           'an image without ground truth scores 0).' +
           (f' Only {capped} per side are embedded to keep the page small.'
            if capped else ''))
    body = (f'<div class="grid">{hist}</div>{legend}'
            f'<h3>Worst images</h3><div class="gallery" id="worst">'
            f'{figures(worst, "worst")}</div>'
            f'<h3>Best images</h3><div class="gallery" id="best">'
            f'{figures(best, "best")}</div>')
    return section('gallery', 'Worst and best images', how, body)


def training_section(losses, metrics, source):
    """``losses`` / ``metrics``: ``{key: (steps, values)}``."""
    if not losses and not metrics:
        return section('training', 'Training curves', '', note(
            source or 'No training log for this evaluation (report.py '
            'takes --scalars WORK_DIR/TIMESTAMP/vis_data/scalars.json).'))
    palette = [BLUE, ORANGE, GREEN, PURPLE, RED, AMBER, GRAY]
    plots = []
    if losses:
        plots.append(charts.line_chart(
            [dict(xs=s, ys=v, color=palette[i % 7], label=k)
             for i, (k, (s, v)) in enumerate(sorted(losses.items()))],
            width=520, height=260, title='Training losses',
            xlabel='iteration', ylabel='loss'))
    if metrics:
        plots.append(charts.line_chart(
            [dict(xs=s, ys=v, color=palette[i % 7], label=k.split('/')[-1])
             for i, (k, (s, v)) in enumerate(sorted(metrics.items()))],
            width=420, height=260, ylim=(0, 1), title='Validation AP',
            xlabel='epoch (or iteration)', ylabel='AP'))
    how = f'From <code>{escape(source)}</code>.'
    return section('training', 'Training curves', how,
                   f'<div class="grid">{"".join(plots)}</div>')
