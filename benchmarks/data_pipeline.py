"""Training data pipeline throughput (images per second per worker): detkit's
COCO training pipeline against torchvision.transforms.v2 doing the same work.

    python benchmarks/data_pipeline.py [--data-root ../shared/data/bccd]
        [--images 50] [--repeats 5] [--warmup 1] [--out F]

detkit: ``CocoDataset(...)[i]`` with configs/_base_/datasets/
coco_detection.py's train pipeline (LoadImageFromFile (cv2 decode),
LoadAnnotations, Resize to 1333x800 keeping the ratio, RandomFlip 0.5,
PackDetInputs: a ``(3, H, W)`` uint8 tensor and the boxes in a
DetDataSample).

torchvision: the same annotation records (parsed once by the same
dataset), ``torchvision.io.decode_jpeg`` of the file, ``tv_tensors.Image``
and ``tv_tensors.BoundingBoxes`` (XYXY), ``v2.Resize(800, max_size=1333)``
(the same 1067x800 output for BCCD's 640x480), ``v2.RandomHorizontalFlip
(0.5)``, then a contiguous image tensor and the labels as a tensor.

Single process (one worker), ``--images`` images per timed call, the two
alternating; images per second = images / median call time. Both
libraries use one thread (``torch.set_num_threads(1)``, OpenCV
``setNumThreads(1)``), as a data-loader worker does.
"""
import argparse
import os.path as osp
import sys

import torch

from common import (BCCD_CLASSES, DEFAULT_BCCD, REPO_ROOT, compare,
                    print_header, report, save_json)

CONFIG = f'{REPO_ROOT}/configs/_base_/datasets/coco_detection.py'


def build_detkit(data_root):
    from mmengine.config import Config
    from mmengine.registry import DefaultScope

    from detkit.registry import DATASETS
    cfg = Config.fromfile(CONFIG)
    with DefaultScope.overwrite_default_scope('detkit'):
        return DATASETS.build(dict(
            type='CocoDataset', data_root=data_root, ann_file='train.json',
            data_prefix=dict(img='images/'),
            metainfo=dict(classes=BCCD_CLASSES),
            filter_cfg=dict(filter_empty_gt=True, min_size=32),
            pipeline=cfg.train_pipeline))


def build_torchvision():
    from torchvision.io import decode_jpeg, read_file
    from torchvision.transforms import v2
    from torchvision import tv_tensors
    transform = v2.Compose([
        v2.Resize(800, max_size=1333, antialias=True),
        v2.RandomHorizontalFlip(0.5),
    ])

    def load(info):
        img = decode_jpeg(read_file(info['img_path']))
        h, w = img.shape[-2:]
        boxes = torch.tensor([inst['bbox'] for inst in info['instances']],
                             dtype=torch.float32).reshape(-1, 4)
        labels = torch.tensor(
            [inst['bbox_label'] for inst in info['instances']],
            dtype=torch.long)
        img, target = transform(
            tv_tensors.Image(img),
            dict(boxes=tv_tensors.BoundingBoxes(
                boxes, format='XYXY', canvas_size=(h, w)), labels=labels))
        return img.as_subclass(torch.Tensor).contiguous(), target

    return load


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--data-root', default=DEFAULT_BCCD)
    parser.add_argument('--images', type=int, default=50,
                        help='images per timed call')
    parser.add_argument('--warmup', type=int, default=1)
    parser.add_argument('--repeats', type=int, default=5)
    parser.add_argument('--out')
    return parser.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    if not osp.isfile(osp.join(args.data_root, 'train.json')):
        sys.exit(f'{args.data_root}/train.json not found: pass --data-root')
    import cv2
    torch.set_num_threads(1)
    cv2.setNumThreads(1)
    info = print_header('COCO training pipeline on BCCD (one worker)', args)
    dataset = build_detkit(args.data_root)
    tv_load = build_torchvision()
    n = min(args.images, len(dataset))
    records = [dataset.get_data_info(i) for i in range(n)]
    sample = dataset[0]
    tv_img, _ = tv_load(records[0])
    print(f'{n} images per call; detkit output {tuple(sample["inputs"].shape)}'
          f', torchvision output {tuple(tv_img.shape)}')

    def run_detkit():
        for i in range(n):
            dataset[i]

    def run_tv():
        for record in records:
            tv_load(record)

    results = compare(dict(detkit=run_detkit, torchvision=run_tv),
                      warmup=args.warmup, repeats=args.repeats)
    rows = report(results, reference='torchvision')
    for row in rows:
        row['images_per_s'] = n / row['median_s']
        print(f'{row["name"]:<12} {row["images_per_s"]:.1f} images/s '
              'per worker')
    save_json(args.out, dict(machine=info, rows=rows, images=n))
    return rows


if __name__ == '__main__':
    main()
