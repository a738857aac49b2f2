"""How long the HTML evaluation report takes to build, and how big it is,
for a large test set: synthetic shapes images with synthetic predictions.

    python benchmarks/report_build.py --num-images 5000 --work-dir /tmp/rb

Writes ``--num-images`` validation images of detkit's synthetic shapes
(``generate_shapes_dataset``, cached in ``WORK_DIR/shapes``), a results file
whose predictions are the ground truth with the usual errors of a detector
(jittered boxes, missed objects, wrong classes, duplicates, background
boxes; scores higher for the good ones), then runs
``tools/analysis_tools/report.py`` on it and prints the build time (the
whole tool: evaluation included) and the page size. Seeded: the same
arguments give the same files.
"""
import argparse
import json
import os.path as osp
import runpy
import sys
import time

import mmengine
import numpy as np
import torch

REPO = osp.dirname(osp.dirname(osp.abspath(__file__)))
sys.path.insert(0, REPO)

from detkit.datasets.synthetic_shapes import (SHAPES_CLASSES,  # noqa: E402
                                              generate_shapes_dataset)


def synthetic_predictions(coco, seed=0):
    """One results-file entry per image of the COCO dict ``coco``."""
    rng = np.random.default_rng(seed)
    by_image = {}
    for ann in coco['annotations']:
        by_image.setdefault(ann['image_id'], []).append(ann)
    results = []
    num_classes = len(coco['categories'])
    for img in coco['images']:
        boxes, scores, labels = [], [], []
        for ann in by_image.get(img['id'], []):
            x, y, w, h = ann['bbox']
            label = ann['category_id'] - 1
            if rng.random() < 0.12:
                continue  # missed
            for _ in range(2 if rng.random() < 0.08 else 1):  # duplicates
                noise = rng.normal(0, 0.06, 4) * [w, h, w, h]
                boxes.append([x + noise[0], y + noise[1], x + w + noise[2],
                              y + h + noise[3]])
                wrong = rng.random() < 0.08
                labels.append(int(rng.integers(num_classes)) if wrong
                              else label)
                scores.append(rng.beta(2, 4) if wrong else rng.beta(5, 2))
        for _ in range(rng.poisson(1.5)):  # background
            x, y = rng.uniform(0, img['width'] * 0.8, 2)
            size = rng.uniform(8, img['width'] * 0.3)
            boxes.append([x, y, x + size, y + size])
            labels.append(int(rng.integers(num_classes)))
            scores.append(rng.beta(2, 5))
        results.append(dict(
            img_id=img['id'], img_path=img['file_name'],
            ori_shape=(img['height'], img['width']),
            pred_instances=dict(
                bboxes=torch.tensor(boxes, dtype=torch.float32).reshape(
                    -1, 4),
                scores=torch.tensor(scores, dtype=torch.float32),
                labels=torch.tensor(labels, dtype=torch.int64))))
    return results


def write_config(data_root, path):
    dataset = dict(type='CocoDataset', data_root=data_root + '/',
                   ann_file='annotations/val.json',
                   data_prefix=dict(img='images/'),
                   metainfo=dict(classes=SHAPES_CLASSES), test_mode=True,
                   pipeline=[])
    cfg = dict(default_scope='detkit',
               test_dataloader=dict(batch_size=1, dataset=dataset),
               test_evaluator=dict(
                   type='CocoMetric', metric='bbox',
                   ann_file=osp.join(data_root, 'annotations/val.json')))
    mmengine.Config(cfg).dump(path)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--num-images', type=int, default=5000)
    parser.add_argument('--img-size', type=int, default=128)
    parser.add_argument('--work-dir', default='/tmp/detkit_report_bench')
    parser.add_argument('--topk', type=int, default=12)
    args = parser.parse_args()
    data_root = osp.join(args.work_dir, f'shapes{args.num_images}')
    ann_file = osp.join(data_root, 'annotations', 'val.json')
    if not osp.isfile(ann_file):
        start = time.perf_counter()
        generate_shapes_dataset(data_root, num_train=0,
                                num_val=args.num_images,
                                img_size=args.img_size, max_objects=6)
        print(f'dataset: {args.num_images} images in '
              f'{time.perf_counter() - start:.0f} s')
    with open(ann_file) as f:
        coco = json.load(f)
    pkl = osp.join(args.work_dir, f'results{args.num_images}.pkl')
    mmengine.dump(synthetic_predictions(coco), pkl)
    cfg = osp.join(args.work_dir, f'report_bench{args.num_images}.py')
    write_config(data_root, cfg)
    out = osp.join(args.work_dir, f'report{args.num_images}.html')
    report = runpy.run_path(osp.join(REPO, 'tools', 'analysis_tools',
                                     'report.py'), run_name='report')
    start = time.perf_counter()
    report['main']([cfg, pkl, '--out', out, '--topk', str(args.topk)])
    seconds = time.perf_counter() - start
    num_dets = sum(len(r['pred_instances']['scores'])
                   for r in mmengine.load(pkl))
    print(f'{args.num_images} images, {len(coco["annotations"])} ground '
          f'truths, {num_dets} detections: report.py took {seconds:.1f} s '
          f'(evaluation included), page {osp.getsize(out) / 1e6:.2f} MB '
          f'at {out}')


if __name__ == '__main__':
    main()
