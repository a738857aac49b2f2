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
``OUT_DIR/confusion_matrix.json`` (the counts).
"""
import argparse
import json
import os
import os.path as osp
import sys

import numpy as np
from mmengine.config import DictAction

sys.path.insert(0, osp.dirname(osp.abspath(__file__)))
from results_io import (build_test_dataset, ground_truth,  # noqa: E402
                        load_cfg, load_results, match_results, predictions)


def image_confusion(matrix, gt_bboxes, gt_labels, bboxes, scores, labels,
                    score_thr=0.3, tp_iou_thr=0.5, nms_iou_thr=None):
    """Add one image's counts to ``matrix`` (in place)."""
    import torch
    from torchvision.ops import nms

    from detkit.evaluation import box_iou_np
    found = np.zeros(len(gt_labels))
    for label in np.unique(labels):
        mask = labels == label
        boxes, conf = bboxes[mask], scores[mask]
        if nms_iou_thr is not None:
            keep = nms(torch.as_tensor(boxes), torch.as_tensor(conf),
                       nms_iou_thr).numpy()
            boxes, conf = boxes[keep], conf[keep]
        boxes = boxes[conf >= score_thr]
        hits = box_iou_np(boxes, gt_bboxes) >= tp_iou_thr  # (D, G)
        per_gt = hits.sum(axis=0)
        np.add.at(matrix[:, label], gt_labels, per_gt)
        found += per_gt * (gt_labels == label)
        matrix[-1, label] += int((hits.sum(axis=1) == 0).sum())
    np.add.at(matrix[:, -1], gt_labels[found == 0], 1)


def calculate_confusion_matrix(pairs, num_classes, score_thr=0.3,
                               tp_iou_thr=0.5, nms_iou_thr=None):
    """Counts ``(C + 1, C + 1)`` int64 over ``(result, truth)`` pairs."""
    matrix = np.zeros((num_classes + 1, num_classes + 1), dtype=np.int64)
    for result, truth in pairs:
        image_confusion(matrix, truth['bboxes'], truth['labels'],
                        *predictions(result), score_thr=score_thr,
                        tp_iou_thr=tp_iou_thr, nms_iou_thr=nms_iou_thr)
    return matrix


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
    plot_confusion_matrix(matrix, names,
                          osp.join(args.save_dir, 'confusion_matrix.png'),
                          args.color_theme)
    with open(osp.join(args.save_dir, 'confusion_matrix.json'), 'w') as f:
        json.dump(dict(classes=names, matrix=matrix.tolist()), f)
    print('rows: ground truth, columns: prediction')
    print('\n'.join(f'{name:>12} ' + ' '.join(f'{v:6d}' for v in row)
                    for name, row in zip(names, matrix)))
    return matrix


if __name__ == '__main__':
    main()
