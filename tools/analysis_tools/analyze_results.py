"""The best and the worst images of a results file, by per-image AP.

    python tools/test.py CONFIG CKPT --out results.pkl
    python tools/analysis_tools/analyze_results.py CONFIG results.pkl out/ \
        --topk 20 --show-score-thr 0.3

Each image's AP is the Pascal-VOC area AP (``detkit.evaluation.eval_map``)
of its own detections against its own annotations, averaged over the
classes it contains and over IoU thresholds 0.5, 0.55, ..., 0.95 (all
detections count; ``--show-score-thr`` only affects the drawing;
``detkit.evaluation.analysis.rank_images``, which the HTML report's gallery
shares). The ``--topk`` highest go to ``OUT_DIR/good/``, the lowest to
``OUT_DIR/bad/``, drawn ground truth | prediction side by side, named
``<image stem>_<AP rounded to 3 places><ext>``. ``--show`` also shows each
picture in a window for ``--wait-time`` seconds (0: until a key); on a
machine without a display it says so and goes on.
"""
import argparse
import os
import os.path as osp
import sys

import cv2
from mmengine.config import DictAction

from detkit.evaluation.analysis import rank_images

sys.path.insert(0, osp.dirname(osp.abspath(__file__)))
from results_io import (build_test_dataset, ground_truth,  # noqa: E402
                        has_display, load_cfg, load_results, match_results,
                        predictions, show_picture)

def save_pictures(ranked, out_dir, visualizer, score_thr):
    """Draw each ``(AP, result, truth)`` into ``out_dir``; returns the
    paths."""
    import torch
    from mmengine.structures import InstanceData

    from detkit.structures import DetDataSample
    os.makedirs(out_dir, exist_ok=True)
    paths = []
    for ap, result, truth in ranked:
        image = cv2.imread(truth['img_path'], cv2.IMREAD_COLOR)
        if image is None:
            raise FileNotFoundError(f'cannot read {truth["img_path"]}')
        bboxes, scores, labels = predictions(result)
        keep = ~truth['ignore']
        sample = DetDataSample(
            gt_instances=InstanceData(
                bboxes=torch.as_tensor(truth['bboxes'][keep]),
                labels=torch.as_tensor(truth['labels'][keep])),
            pred_instances=InstanceData(
                bboxes=torch.as_tensor(bboxes), scores=torch.as_tensor(scores),
                labels=torch.as_tensor(labels)))
        stem, ext = osp.splitext(osp.basename(truth['img_path']))
        path = osp.join(out_dir, f'{stem}_{round(ap, 3)}{ext}')
        visualizer.add_datasample(stem, image[..., ::-1], data_sample=sample,
                                  out_file=path, pred_score_thr=score_thr)
        paths.append(path)
    return paths


def parse_args(argv=None):
    parser = argparse.ArgumentParser(
        description='Save the best and worst images by per-image AP')
    parser.add_argument('config', help='test config file')
    parser.add_argument('prediction_path', help='tools/test.py --out file')
    parser.add_argument('show_dir', help='folder for good/ and bad/')
    parser.add_argument('--topk', type=int, default=20,
                        help='images saved in each of good/ and bad/')
    parser.add_argument('--show-score-thr', type=float, default=0,
                        help='draw predictions scoring at least this')
    parser.add_argument('--show', action='store_true',
                        help='also show each picture in a window')
    parser.add_argument('--wait-time', type=float, default=0,
                        help='seconds each picture is shown with --show '
                        '(0: until a key is pressed)')
    parser.add_argument('--cfg-options', nargs='+', action=DictAction)
    return parser.parse_args(argv)


def main(argv=None):
    """Returns ``dict(good=[(img_path, AP)...], bad=[...])``, best first
    in ``good`` and worst first in ``bad``."""
    args = parse_args(argv)
    if args.topk < 1:
        raise SystemExit(f'--topk must be >= 1, got {args.topk}')
    cfg = load_cfg(args.config, args.cfg_options)
    dataset = build_test_dataset(cfg)
    pairs = match_results(load_results(args.prediction_path),
                          ground_truth(dataset), args.prediction_path)
    ranked = rank_images(pairs, len(dataset.metainfo['classes']))
    good = ranked[::-1][:args.topk]
    bad = ranked[:args.topk]

    from detkit.visualization import DetLocalVisualizer
    visualizer = DetLocalVisualizer(name='analyze_results')
    visualizer.dataset_meta = dataset.metainfo
    show = args.show and has_display()
    if args.show and not show:
        print('--show: no display on this machine (DISPLAY is not set); the '
              f'pictures are saved under {args.show_dir}')
    for name, part in (('good', good), ('bad', bad)):
        paths = save_pictures(part, osp.join(args.show_dir, name),
                              visualizer, args.show_score_thr)
        print(f'{name}: ' + ', '.join(
            f'{osp.basename(t["img_path"])} {ap:.3f}' for ap, _, t in part))
        for path in paths if show else ():
            show_picture(path, f'{name}: {osp.basename(path)}',
                         args.wait_time)
    return dict(good=[(t['img_path'], ap) for ap, _, t in good],
                bad=[(t['img_path'], ap) for ap, _, t in bad])


if __name__ == '__main__':
    main()
