"""A folder of images and a class list -> a COCO json without annotations,
to run ``tools/test.py`` (with ``CocoMetric(format_only=True)``) or any
CocoDataset-based pipeline on unlabeled pictures.

    python tools/dataset_converters/images2coco.py data/unlabeled \
        classes.txt data/unlabeled.json

CLASSES_TXT holds one class name per line (blank lines ignored), in the
order of the model's labels. Images are found recursively (extensions
``--extensions``, minus ``--exclude-extensions``); ``file_name`` is the
path relative to IMG_DIR, so use ``data_prefix=dict(img=IMG_DIR)``. Image
ids and category ids count from 0, in sorted file order and class order.
Width and height are those OpenCV decodes, i.e. after EXIF rotation, as
detkit's LoadImageFromFile sees the picture (the files are read by the same
code). Files that cannot be read (empty, truncated, corrupt, a FIFO or
other non-regular file) are all listed in one error.

``--check`` writes nothing: it prints, for the images found, which ones
cannot be read and which ones load but are odd (EXIF rotation, grayscale,
tiny, extreme aspect ratio; see detkit.apis.image_check), and exits 1 if
one cannot be read.
"""
import argparse
import json
import os
import os.path as osp
import sys

from detkit.apis.image_check import ImageCheckReport, ImageProblem, \
    check_image_file
from detkit.datasets.transforms.loading import (BrokenImageError,
                                                imread_bytes,
                                                read_image_bytes)

EXTENSIONS = ('.jpg', '.jpeg', '.png', '.bmp', '.tif', '.tiff', '.webp')


def read_classes(path):
    with open(path) as f:
        classes = [line.strip() for line in f if line.strip()]
    if not classes:
        raise ValueError(f'{path} lists no class (one name per line)')
    if len(set(classes)) != len(classes):
        raise ValueError(f'{path} lists a class twice: {classes}')
    return classes


def find_images(img_dir, extensions=EXTENSIONS, exclude=()):
    """Paths relative to ``img_dir``, sorted."""
    extensions = tuple(e.lower() for e in extensions)
    exclude = tuple(e.lower() for e in exclude)
    found = []
    for root, _, files in os.walk(img_dir):
        for name in files:
            lower = name.lower()
            if lower.endswith(extensions) and not (exclude and
                                                   lower.endswith(exclude)):
                found.append(osp.relpath(osp.join(root, name), img_dir))
    return sorted(found)


def check_folder(img_dir, extensions=EXTENSIONS, exclude=()):
    """The :class:`~detkit.apis.image_check.ImageCheckReport` of the
    images :func:`find_images` lists."""
    found = find_images(img_dir, extensions, exclude)
    problems = [
        ImageProblem(rel, osp.join(img_dir, rel), severity, problem)
        for rel in found
        for severity, problem in check_image_file(osp.join(img_dir, rel))
    ]
    return ImageCheckReport(problems, len(found))


def images_to_coco(img_dir, classes, extensions=EXTENSIONS, exclude=()):
    images, unreadable = [], []
    for img_id, rel in enumerate(find_images(img_dir, extensions, exclude)):
        path = osp.join(img_dir, rel)
        try:
            img = imread_bytes(read_image_bytes(path), path)
        except BrokenImageError as err:
            unreadable.append(f'{path}: {err.reason}')
            continue
        images.append(dict(id=img_id, file_name=rel.replace(os.sep, '/'),
                           height=int(img.shape[0]), width=int(img.shape[1])))
    if unreadable:
        raise OSError(
            f'{len(unreadable)} images under {img_dir} cannot be read; '
            'remove or replace them (--check lists odd images too):\n  '
            + '\n  '.join(unreadable))
    if not images:
        raise FileNotFoundError(f'no image ({", ".join(extensions)}) under '
                                f'{img_dir}')
    categories = [dict(id=i, name=name, supercategory='none')
                  for i, name in enumerate(classes)]
    return dict(images=images, annotations=[], categories=categories)


def parse_args(argv=None):
    parser = argparse.ArgumentParser(
        description='Images + class list -> unlabeled COCO json')
    parser.add_argument('img_dir', help='folder of images (searched '
                        'recursively)')
    parser.add_argument('classes', help='text file, one class per line')
    parser.add_argument('out', help='COCO json to write')
    parser.add_argument('--extensions', nargs='+', default=list(EXTENSIONS))
    parser.add_argument('--exclude-extensions', nargs='+', default=[],
                        help='e.g. .png to skip PNG files')
    parser.add_argument('--check', action='store_true',
                        help='only report unreadable and odd images (exit '
                        '1 if one cannot be read); nothing is written')
    return parser.parse_args(argv)


def main(argv=None):
    """Returns the COCO dict that was written (with ``--check``: exits
    with the report's status)."""
    args = parse_args(argv)
    if args.check:
        report = check_folder(args.img_dir, args.extensions,
                              args.exclude_extensions)
        print(report)
        sys.exit(1 if report.errors else 0)
    coco = images_to_coco(args.img_dir, read_classes(args.classes),
                          args.extensions, args.exclude_extensions)
    if osp.dirname(args.out):
        os.makedirs(osp.dirname(args.out), exist_ok=True)
    with open(args.out, 'w') as f:
        json.dump(coco, f)
    print(f'wrote {len(coco["images"])} images and '
          f'{len(coco["categories"])} categories to {args.out}')
    return coco


if __name__ == '__main__':
    main()
