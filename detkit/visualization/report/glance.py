"""The report's first section: the headline number and, in a few lines,
where the model is good and where it fails, read off the other sections'
numbers."""
import math
import os.path as osp
from html import escape

import numpy as np

from .html import section


def glance_section(classes, numbers, matrix, gt_counts, ranked, overall_thr,
                   kind):
    """``numbers``: :func:`.numbers.gather`'s; ``matrix``: the confusion
    matrix; ``gt_counts``: ground truths per class (all of them, as the
    matrix counts them); ``ranked``: the per-image AP ranking (ascending);
    ``overall_thr``: the all-classes F1 threshold or None."""
    classes = [escape(c) for c in classes]
    items = []
    rows = numbers['rows']
    if kind == 'coco':
        stats = {k: v for k, _, v in numbers['summary']}
        items.append(f'<span class="big">mAP {stats["mAP"]:.3f}</span>'
                     f'AP50 {stats["mAP_50"]:.3f} · AP75 '
                     f'{stats["mAP_75"]:.3f}')
    elif numbers['summary']:
        key, _, value = numbers['summary'][0]
        items.append(f'<span class="big">{escape(key)} {value:.3f}</span>')
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
            f'{k} {v:.3f}' for k, v in losses.items()) +
            f' (largest: <b>{top}</b>).')
    off = matrix[:-1, :-1].copy()
    np.fill_diagonal(off, 0)
    if off.sum():
        i, j = np.unravel_index(int(off.argmax()), off.shape)
        items.append(f'Most frequent confusion: ground truth <b>{classes[i]}'
                     f'</b> detected as <b>{classes[j]}</b> ('
                     f'{"once" if off[i, j] == 1 else f"{off[i, j]} times"}'
                     ').')
    gts = np.asarray(gt_counts)
    if gts.sum():
        # The matrix's background column counts each missed object once.
        missed = matrix[:-1, -1]
        k = int(np.argmax(missed / np.maximum(gts, 1)))
        items.append(f'{int(gts.sum() - missed.sum())} of {int(gts.sum())} '
                     'ground truths found by a detection of their class '
                     'above the score threshold; most often missed: '
                     f'<b>{classes[k]}</b> ({int(missed[k])} of '
                     f'{int(gts[k])}). {int(matrix[-1].sum())} detections '
                     'on background.')
    if overall_thr is not None and overall_thr['threshold'] is not None:
        items.append(f'Score threshold maximising F1 over all classes: '
                     f'<b>{overall_thr["threshold"]:.2f}</b> (F1 '
                     f'{overall_thr["f1"]:.3f}).')
    aps = np.array([ap for ap, _, _ in ranked])
    if len(aps):
        items.append(f'{int((aps < .5).sum())} of {len(aps)} images have an '
                     f'image AP below 0.5; the worst is <b>'
                     f'{escape(osp.basename(ranked[0][2]["img_path"]))}</b> '
                     f'({aps[0]:.3f}).')
    body = '<ul class="glance">' + ''.join(f'<li>{i}</li>' for i in items)
    return section('glance', 'At a glance', '', body + '</ul>')
