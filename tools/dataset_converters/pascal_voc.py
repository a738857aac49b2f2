"""Convert Pascal VOC 2007/2012 splits to COCO-format json.

Usage::

    python tools/dataset_converters/pascal_voc.py data/VOCdevkit \
        -o data/coco_voc

For every ``VOC2007``/``VOC2012`` folder under ``DEVKIT_PATH`` and every
split list in its ``ImageSets/Main`` (``train``, ``val``, ``trainval``, and
``test`` for 2007) this writes ``voc07_<split>.json`` / ``voc12_<split>.json``
(and ``voc0712_<split>.json`` when both years exist). ``file_name`` is
relative to ``DEVKIT_PATH``, so the dataset config is::

    dict(type='CocoDataset', data_root='data/VOCdevkit/',
         ann_file='../coco_voc/voc07_trainval.json',
         metainfo=dict(classes=VOC_CLASSES))

Boxes are the ones :class:`detkit.datasets.VOCDataset` produces: each VOC
coordinate minus 1, so ``bbox = [xmin - 1, ymin - 1, xmax - xmin, ymax -
ymin]``; ``difficult`` objects become ``iscrowd: 1`` (ignored in training
and evaluation, as ``difficult`` is). Category ids are 1..20 in
``VOC_CLASSES`` order.
"""
import argparse
import json
import os
import os.path as osp
import sys

try:
    import detkit  # noqa: F401
except ImportError:  # a source checkout that was not pip-installed
    sys.path.insert(0, osp.dirname(osp.dirname(osp.dirname(
        osp.abspath(__file__)))))

import cv2  # noqa: E402

from detkit.datasets.voc import VOC_CLASSES, parse_voc_xml  # noqa: E402

YEARS = (('2007', 'voc07'), ('2012', 'voc12'))


def split_ids(devkit: str, year: str, split: str):
    """Image ids of ``VOC<year>/ImageSets/Main/<split>.txt`` or None."""
    path = osp.join(devkit, f'VOC{year}', 'ImageSets', 'Main', f'{split}.txt')
    if not osp.isfile(path):
        return None
    with open(path) as f:
        return [line.strip() for line in f if line.strip()]


def convert(devkit: str, years, split: str) -> dict:
    """One COCO dict for ``split`` of the given years (in order)."""
    images, annotations, skipped = [], [], 0
    cat_id = {name: i + 1 for i, name in enumerate(VOC_CLASSES)}
    for year in years:
        for img_name in split_ids(devkit, year, split) or []:
            rel_img = osp.join(f'VOC{year}', 'JPEGImages', f'{img_name}.jpg')
            xml = osp.join(devkit, f'VOC{year}', 'Annotations',
                           f'{img_name}.xml')
            width, height, objects = parse_voc_xml(xml)
            if width is None:
                img = cv2.imread(osp.join(devkit, rel_img))
                if img is None:
                    raise ValueError(f'{xml} has no <size> and '
                                     f'{rel_img} cannot be read')
                height, width = img.shape[:2]
            image_id = len(images) + 1
            images.append(dict(id=image_id, file_name=rel_img, width=width,
                               height=height))
            for obj in objects:
                if obj['name'] not in cat_id:
                    skipped += 1
                    continue
                x1, y1, x2, y2 = (v - 1 for v in obj['bbox'])
                annotations.append(
                    dict(id=len(annotations) + 1, image_id=image_id,
                         category_id=cat_id[obj['name']],
                         bbox=[x1, y1, x2 - x1, y2 - y1],
                         area=(x2 - x1) * (y2 - y1),
                         iscrowd=int(bool(obj['difficult']))))
    if skipped:
        print(f'  skipped {skipped} objects of classes outside VOC_CLASSES')
    return dict(
        images=images,
        annotations=annotations,
        categories=[dict(id=i, name=n, supercategory='none')
                    for n, i in cat_id.items()])


def main(argv=None):
    parser = argparse.ArgumentParser(
        description='Convert Pascal VOC annotations to COCO json')
    parser.add_argument('devkit_path', help='the VOCdevkit folder')
    parser.add_argument('-o', '--out-dir', help='output folder (default: '
                        'DEVKIT_PATH)')
    parser.add_argument('--out-format', default='coco', choices=['coco'],
                        help='only COCO json is written')
    args = parser.parse_args(argv)
    devkit = args.devkit_path
    out_dir = args.out_dir or devkit
    years = [(y, p) for y, p in YEARS if osp.isdir(osp.join(devkit,
                                                           f'VOC{y}'))]
    if not years:
        sys.exit(f'{devkit} has neither VOC2007/ nor VOC2012/')
    jobs = [([y], p) for y, p in years]
    if len(years) == 2:
        jobs.append((['2007', '2012'], 'voc0712'))
    os.makedirs(out_dir, exist_ok=True)
    written = []
    for year_list, prefix in jobs:
        splits = ['train', 'val', 'trainval'] + (['test'] if year_list == [
            '2007'
        ] else [])
        for split in splits:
            if all(split_ids(devkit, y, split) is None for y in year_list):
                continue
            out = osp.join(out_dir, f'{prefix}_{split}.json')
            coco = convert(devkit, year_list, split)
            with open(out, 'w') as f:
                json.dump(coco, f)
            print(f'{out}: {len(coco["images"])} images, '
                  f'{len(coco["annotations"])} boxes')
            written.append(out)
    return written


if __name__ == '__main__':
    main()
