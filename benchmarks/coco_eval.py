"""COCO box evaluation time: CocoMetric with pycocotools against CocoMetric
with faster-coco-eval, side by side, on a synthetic seeded set.

    python benchmarks/coco_eval.py [--images 5000] [--dets 100]
        [--repeats 3] [--warmup 0] [--out F]

The set: ``--images`` images of 640x480 with 1..20 ground-truth boxes of 80
categories each; ``--dets`` detections per image, a jittered copy of every
ground truth (sometimes with a wrong class) plus random boxes, with uniform
random scores. Each run times ``CocoMetric.compute_metrics`` (results to
COCO format, ``loadRes``, ``evaluate``, ``accumulate``, ``summarize``) on the
same predictions; the script also checks that both backends give the same
metrics to 4 decimals.
"""
import argparse
import json
import os.path as osp
import tempfile

import numpy as np

from common import compare, print_header, report, save_json

CLASSES = tuple(f'class{i}' for i in range(80))


def synthetic_set(num_images, dets_per_image, seed=0):
    """``(coco json dict, per-image prediction dicts)``."""
    rng = np.random.default_rng(seed)
    images, annotations, preds = [], [], []
    for img_id in range(1, num_images + 1):
        images.append(dict(id=img_id, width=640, height=480,
                           file_name=f'{img_id:06d}.jpg'))
        n = int(rng.integers(1, 21))
        wh = rng.uniform(8, 200, (n, 2))
        xy = rng.uniform(0, 1, (n, 2)) * (np.array([640, 480]) - wh)
        labels = rng.integers(0, 80, n)
        for box_xy, box_wh, label in zip(xy, wh, labels):
            annotations.append(dict(
                id=len(annotations) + 1, image_id=img_id,
                bbox=[float(v) for v in (*box_xy, *box_wh)],
                area=float(box_wh[0] * box_wh[1]), iscrowd=0,
                category_id=int(label) + 1))
        k = min(n, dets_per_image)
        jitter = rng.normal(0, 0.1, (k, 4)) * np.tile(wh[:k], 2)
        good = np.hstack([xy[:k], xy[:k] + wh[:k]]) + jitter
        good_labels = np.where(rng.uniform(size=k) < 0.8, labels[:k],
                               rng.integers(0, 80, k))
        m = dets_per_image - k
        rand_wh = rng.uniform(8, 200, (m, 2))
        rand_xy = rng.uniform(0, 1, (m, 2)) * (np.array([640, 480]) - rand_wh)
        rand = np.hstack([rand_xy, rand_xy + rand_wh])
        preds.append(dict(
            img_id=img_id,
            bboxes=np.vstack([good, rand]).astype(np.float32),
            scores=rng.uniform(size=dets_per_image).astype(np.float32),
            labels=np.concatenate([good_labels,
                                   rng.integers(0, 80, m)]).astype(np.int64)))
    categories = [dict(id=i + 1, name=name) for i, name in enumerate(CLASSES)]
    return dict(images=images, annotations=annotations,
                categories=categories), preds


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--images', type=int, default=5000)
    parser.add_argument('--dets', type=int, default=100)
    parser.add_argument('--warmup', type=int, default=0)
    parser.add_argument('--repeats', type=int, default=3)
    parser.add_argument('--out')
    return parser.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    import logging

    from mmengine.logging import MMLogger

    from detkit.evaluation import CocoMetric
    MMLogger.get_current_instance().setLevel(logging.WARNING)
    info = print_header('COCO evaluation', args)
    coco_json, preds = synthetic_set(args.images, args.dets)
    print(f'{len(coco_json["images"])} images, '
          f'{len(coco_json["annotations"])} ground truths, '
          f'{sum(len(p["scores"]) for p in preds)} detections')
    with tempfile.TemporaryDirectory() as tmp:
        ann_file = osp.join(tmp, 'gt.json')
        with open(ann_file, 'w') as f:
            json.dump(coco_json, f)
        metrics, outputs = {}, {}
        for backend in ('pycocotools', 'faster-coco-eval'):
            metric = CocoMetric(ann_file=ann_file, backend=backend)
            metric.dataset_meta = dict(classes=CLASSES)
            metrics[backend] = metric

        def run(backend):
            def call():
                outputs[backend] = metrics[backend].compute_metrics(
                    [(None, p) for p in preds])
            return call

        results = compare({b: run(b) for b in metrics}, warmup=args.warmup,
                          repeats=args.repeats)
    rows = report(results, reference='pycocotools')
    ref = metrics['pycocotools'].coco_stats['bbox']
    fast = metrics['faster-coco-eval'].coco_stats['bbox']
    # CocoMetric's maxDets are proposal_nums = (100, 300, 1000).
    names = ['AP', 'AP50', 'AP75', 'AP_s', 'AP_m', 'AP_l', 'AR@100',
             'AR@300', 'AR@1000', 'AR_s', 'AR_m', 'AR_l']
    for name, a, b in zip(names, ref, fast):
        print(f'{name:<8} pycocotools {a:.6f}  faster-coco-eval {b:.6f}')
    same = all(round(a, 4) == round(b, 4) for a, b in zip(ref, fast))
    print(f'all 12 COCOeval stats identical to 4 decimals: {same}')
    save_json(args.out, dict(machine=info, rows=rows, stats=dict(
        pycocotools=ref, faster_coco_eval=fast), identical=same,
                             images=args.images, dets=args.dets))
    return rows


if __name__ == '__main__':
    main()
