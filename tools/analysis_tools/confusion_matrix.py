"""Confusion matrix of a results file against the test set's annotations.

    python tools/test.py CONFIG CKPT --out results.pkl
    python tools/analysis_tools/confusion_matrix.py CONFIG results.pkl out/ \
        --score-thr 0.3 --tp-iou-thr 0.5

The matrix is ``(C + 1) x (C + 1)``: rows are ground-truth classes, columns
predicted classes, and the last row/column is background (mmdetection's
layout). Per image and predicted class (after an optional per-class NMS at
``--nms-iou-thr``), every detection scoring at least ``--score-thr``:

- adds 1 to ``[gt label, predicted label]`` for each ground truth it
  overlaps with IoU >= ``--tp-iou-thr`` (a match of the same class makes
  that ground truth found);
- adds 1 to ``[background, predicted label]`` when it overlaps none.

Every ground truth never found adds 1 to ``[its label, background]``.
Writes ``OUT_DIR/confusion_matrix.png`` (rows normalised to percent) and
``OUT_DIR/confusion_matrix.json`` (the counts); ``--show`` also opens the
picture in a window (on a machine without a display it says so and goes
on). The counting is ``detkit.evaluation.analysis.calculate_confusion_matrix``,
which the HTML report (``report.py``) shares.
"""
import argparse
import json
import os
import os.path as osp
import sys

import numpy as np
from mmengine.config import DictAction

from detkit.evaluation.analysis import calculate_confusion_matrix

sys.path.insert(0, osp.dirname(osp.abspath(__file__)))
from results_io import (build_test_dataset, ground_truth,  # noqa: E402
                        load_cfg, load_results, match_results, show_picture)


def plot_confusion_matrix(matrix, names, out_file, cmap='plasma'):
    """Rows normalised to percent, one annotated cell per entry."""
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt
    sums = matrix.sum(axis=1, keepdims=True)
    percent = matrix / np.maximum(sums, 1) * 100
    n = len(names)
    fig, ax = plt.subplots(figsize=(max(4, 0.6 * n + 2), max(3, 0.5 * n + 2)),
                           dpi=100)
    image = ax.imshow(percent, cmap=cmap, vmin=0, vmax=100)
    fig.colorbar(image, ax=ax)
    ax.set_xticks(range(n), names, rotation=45, ha='right')
    ax.set_yticks(range(n), names)
    for i in range(n):
        for j in range(n):
            ax.text(j, i, f'{percent[i, j]:.0f}', ha='center', va='center',
                    color='w' if percent[i, j] < 50 else 'k', fontsize=8)
    ax.set_xlabel('Prediction label')
    ax.set_ylabel('Ground truth label')
    ax.set_title('Normalized confusion matrix (%)')
    fig.tight_layout()
    fig.savefig(out_file)
    plt.close(fig)


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description='Confusion matrix')
    parser.add_argument('config', help='test config file')
    parser.add_argument('prediction_path', help='tools/test.py --out file')
    parser.add_argument('save_dir', help='folder for the picture and JSON')
    parser.add_argument('--score-thr', type=float, default=0.3)
    parser.add_argument('--tp-iou-thr', type=float, default=0.5)
    parser.add_argument('--nms-iou-thr', type=float, default=None,
                        help='per-class NMS of the predictions first')
    parser.add_argument('--color-theme', default='plasma',
                        help='matplotlib colour map')
    parser.add_argument('--show', action='store_true',
                        help='also show the picture in a window')
    parser.add_argument('--cfg-options', nargs='+', action=DictAction)
    return parser.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    cfg = load_cfg(args.config, args.cfg_options)
    dataset = build_test_dataset(cfg)
    classes = list(dataset.metainfo['classes'])
    pairs = match_results(load_results(args.prediction_path),
                          ground_truth(dataset), args.prediction_path)
    matrix = calculate_confusion_matrix(pairs, len(classes), args.score_thr,
                                        args.tp_iou_thr, args.nms_iou_thr)
    os.makedirs(args.save_dir, exist_ok=True)
    names = classes + ['background']
    picture = osp.join(args.save_dir, 'confusion_matrix.png')
    plot_confusion_matrix(matrix, names, picture, args.color_theme)
    with open(osp.join(args.save_dir, 'confusion_matrix.json'), 'w') as f:
        json.dump(dict(classes=names, matrix=matrix.tolist()), f)
    print('rows: ground truth, columns: prediction')
    print('\n'.join(f'{name:>12} ' + ' '.join(f'{v:6d}' for v in row)
                    for name, row in zip(names, matrix)))
    if args.show:
        show_picture(picture, 'confusion matrix')
    return matrix


if __name__ == '__main__':
    main()
