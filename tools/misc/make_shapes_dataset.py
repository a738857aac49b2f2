"""Generate detkit's synthetic shapes dataset (COCO format).

Usage::

    python tools/misc/make_shapes_dataset.py --out-dir data/shapes
    python tools/misc/make_shapes_dataset.py --out-dir data/shapes \
        --num-train 400 --num-val 80 --img-size 192 --seed 0

Writes ``OUT_DIR/images/*.jpg`` and ``OUT_DIR/annotations/{train,val}.json``
(see :mod:`detkit.datasets.synthetic_shapes`). The same arguments always
give byte-identical files.
"""
import argparse
import os.path as osp
import sys
import time

try:
    import detkit  # noqa: F401
except ImportError:  # a source checkout that was not pip-installed
    sys.path.insert(0, osp.dirname(osp.dirname(osp.dirname(
        osp.abspath(__file__)))))

from detkit.datasets.synthetic_shapes import (  # noqa: E402
    SHAPES_CLASSES, generate_shapes_dataset)


def parse_args(argv=None):
    parser = argparse.ArgumentParser(
        description='Generate the synthetic shapes detection dataset')
    parser.add_argument('--out-dir', required=True, help='output folder')
    parser.add_argument('--num-train', type=int, default=400,
                        help='training images (default 400)')
    parser.add_argument('--num-val', type=int, default=80,
                        help='validation images (default 80)')
    parser.add_argument('--img-size', type=int, default=192,
                        help='side of the square images in pixels '
                        '(default 192)')
    parser.add_argument('--seed', type=int, default=0, help='random seed')
    parser.add_argument('--max-objects', type=int, default=6,
                        help='at most this many shapes per image (default 6)')
    parser.add_argument('--min-obj-size', type=float, default=12,
                        help='smallest shape extent in pixels (default 12)')
    parser.add_argument('--max-obj-frac', type=float, default=0.6,
                        help='largest shape extent as a fraction of the '
                        'image side (default 0.6)')
    parser.add_argument('--max-rotation', type=float, default=180,
                        help='shapes turn by up to this many degrees either '
                        'way (default 180; 0 draws them upright)')
    parser.add_argument('--img-format', default='jpg', choices=['jpg',
                                                                'png'])
    return parser.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    if args.num_train < 0 or args.num_val < 0:
        sys.exit('--num-train and --num-val must not be negative')
    start = time.time()
    paths = generate_shapes_dataset(
        args.out_dir,
        num_train=args.num_train,
        num_val=args.num_val,
        img_size=args.img_size,
        seed=args.seed,
        max_objects=args.max_objects,
        min_obj_size=args.min_obj_size,
        max_obj_frac=args.max_obj_frac,
        max_rotation=args.max_rotation,
        img_format=args.img_format)
    print(f'wrote {args.num_train} train and {args.num_val} val images of '
          f'{args.img_size}x{args.img_size} ({", ".join(SHAPES_CLASSES)}) '
          f'in {time.time() - start:.1f} s')
    for key in ('img_dir', 'train_ann_file', 'val_ann_file'):
        print(f'  {key}: {paths[key]}')
    return paths


if __name__ == '__main__':
    main()
