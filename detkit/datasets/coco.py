"""COCO-format detection annotations (``instances_*.json``).

Any COCO-style json works by config alone: ``metainfo=dict(classes=(...))``
picks the categories by *name*, and label ``i`` is ``classes[i]``::

    dict(type='CocoDataset', data_root='../shared/data/bccd/',
         ann_file='train.json', data_prefix=dict(img='images/'),
         metainfo=dict(classes=('RBC', 'WBC', 'Platelets')))

Annotation parsing (mmdetection 3.3): ``bbox = [x, y, w, h]`` becomes
``[x, y, x + w, y + h]`` (no -1). An annotation is skipped, and counted in
one log line per file, when it has ``ignore: true``, when its box does not
intersect the image, when ``area <= 0``, when ``w < 1`` or ``h < 1``, or
when its category is not one of ``classes``. A box that only partly leaves
the image is kept as it is (``Resize`` clips it). ``iscrowd: 1`` keeps the
box with ``ignore_flag = 1``. Structural problems (no width/height,
duplicate ids, a bbox that is not four numbers) raise an error naming the
file and the image or annotation id.
"""
import colorsys
import json
import math
import os.path as osp
from collections import Counter, defaultdict
from typing import Dict, List

from mmengine.fileio import get_local_path
from mmengine.logging import print_log

from detkit.registry import DATASETS
from .base_det_dataset import BaseDetDataset

COCO_CLASSES = (
    'person', 'bicycle', 'car', 'motorcycle', 'airplane', 'bus', 'train',
    'truck', 'boat', 'traffic light', 'fire hydrant', 'stop sign',
    'parking meter', 'bench', 'bird', 'cat', 'dog', 'horse', 'sheep', 'cow',
    'elephant', 'bear', 'zebra', 'giraffe', 'backpack', 'umbrella',
    'handbag', 'tie', 'suitcase', 'frisbee', 'skis', 'snowboard',
    'sports ball', 'kite', 'baseball bat', 'baseball glove', 'skateboard',
    'surfboard', 'tennis racket', 'bottle', 'wine glass', 'cup', 'fork',
    'knife', 'spoon', 'bowl', 'banana', 'apple', 'sandwich', 'orange',
    'broccoli', 'carrot', 'hot dog', 'pizza', 'donut', 'cake', 'chair',
    'couch', 'potted plant', 'bed', 'dining table', 'toilet', 'tv',
    'laptop', 'mouse', 'remote', 'keyboard', 'cell phone', 'microwave',
    'oven', 'toaster', 'sink', 'refrigerator', 'book', 'clock', 'vase',
    'scissors', 'teddy bear', 'hair drier', 'toothbrush')


def make_palette(num: int) -> List[tuple]:
    """``num`` distinct RGB colours (golden-ratio hue steps)."""
    colors = []
    for i in range(num):
        r, g, b = colorsys.hsv_to_rgb((i * 0.618033988749895) % 1.0, 0.8,
                                      0.9)
        colors.append((int(r * 255), int(g * 255), int(b * 255)))
    return colors


_SKIP_REASONS = {
    'ignore': 'marked ignore',
    'outside': 'box outside the image',
    'area': 'area <= 0',
    'small': 'w < 1 or h < 1',
    'category': 'category not in classes',
}


def _number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(
        value, bool) and math.isfinite(value)


@DATASETS.register_module()
class CocoDataset(BaseDetDataset):
    """COCO detection dataset; see the module docstring for the parsing.

    After loading: ``cat_ids`` (json category id of each class, in
    ``classes`` order) and ``cat2label`` (category id -> label).
    """

    METAINFO = dict(classes=COCO_CLASSES, palette=make_palette(80))

    def _read_json(self) -> dict:
        try:
            with get_local_path(self.ann_file,
                                backend_args=self.backend_args) as local:
                with open(local) as f:
                    coco = json.load(f)
        except FileNotFoundError:
            raise FileNotFoundError(
                f'{type(self).__name__}: annotation file {self.ann_file} '
                'does not exist (ann_file is joined to data_root '
                f'{self.data_root!r})') from None
        except json.JSONDecodeError as err:
            raise ValueError(f'{self.ann_file} is not valid JSON: '
                             f'{err}') from None
        for key in ('images', 'annotations', 'categories'):
            if not isinstance(coco.get(key), list):
                raise ValueError(f'{self.ann_file} is not a COCO detection '
                                 f'file: it has no list {key!r}')
        return coco

    def _match_categories(self, categories: List[dict]) -> None:
        """Set ``cat_ids``/``cat2label`` by class name."""
        name_to_id = {}
        for cat in categories:
            if 'id' not in cat or 'name' not in cat:
                raise ValueError(f'{self.ann_file}: category {cat} needs an '
                                 '"id" and a "name"')
            if cat['name'] in name_to_id:
                raise ValueError(f'{self.ann_file}: category name '
                                 f'{cat["name"]!r} appears twice')
            name_to_id[cat['name']] = cat['id']
        classes = self.metainfo['classes']
        missing = [c for c in classes if c not in name_to_id]
        if missing:
            hint = ''
            if len(missing) == len(classes):
                hint = (' None of the classes match: for this file set '
                        f'metainfo=dict(classes={tuple(name_to_id)!r}).')
            raise ValueError(
                f'{self.ann_file}: classes {missing} of metainfo are not '
                f'among its categories {list(name_to_id)}.{hint}')
        self.cat_ids = [name_to_id[c] for c in classes]
        self.cat2label = {cat_id: i for i, cat_id in enumerate(self.cat_ids)}

    def _check_images(self, images: List[dict]) -> Dict[object, dict]:
        by_id = {}
        for img in images:
            img_id = img.get('id')
            where = f'{self.ann_file}: image id={img_id!r}'
            if img_id is None:
                raise ValueError(f'{self.ann_file}: image entry {img} has '
                                 'no "id"')
            if img_id in by_id:
                raise ValueError(f'{where} appears twice in "images"; image '
                                 'ids must be unique')
            if 'file_name' not in img:
                raise ValueError(f'{where} has no "file_name"')
            for key in ('width', 'height'):
                value = img.get(key)
                if not _number(value) or value <= 0:
                    raise ValueError(
                        f'{where} ({img["file_name"]}) has {key}={value!r}; '
                        'each image needs positive "width" and "height" in '
                        'pixels (read them from the image files and add '
                        'them to the json)')
            by_id[img_id] = img
        return by_id

    def _check_annotation(self, ann: dict) -> None:
        bbox = ann.get('bbox')
        if not isinstance(bbox, (list, tuple)) or len(bbox) != 4 or not all(
                _number(v) for v in bbox):
            raise ValueError(
                f'{self.ann_file}: annotation id={ann.get("id")!r} (image '
                f'id={ann.get("image_id")!r}) has bbox={bbox!r}; expected '
                'four finite numbers [x, y, w, h]')

    def load_data_list(self) -> List[dict]:
        coco = self._read_json()
        self._match_categories(coco['categories'])
        images = self._check_images(coco['images'])
        anns_of = defaultdict(list)
        ann_ids, orphans = set(), 0
        for ann in coco['annotations']:
            if 'id' in ann:
                if ann['id'] in ann_ids:
                    raise ValueError(f'{self.ann_file}: annotation id='
                                     f'{ann["id"]!r} appears twice; '
                                     'annotation ids must be unique')
                ann_ids.add(ann['id'])
            self._check_annotation(ann)
            if ann.get('image_id') not in images:
                orphans += 1
                continue
            anns_of[ann['image_id']].append(ann)

        stats = Counter()
        data_list = []
        for img_id, img in images.items():
            instances = [
                inst for inst in (self._parse_annotation(a, img, stats)
                                  for a in anns_of[img_id]) if inst
            ]
            data_list.append(
                dict(
                    img_path=osp.join(self.data_prefix.get('img', ''),
                                      img['file_name']),
                    img_id=img_id,
                    width=int(img['width']),
                    height=int(img['height']),
                    instances=instances))
        self._log_stats(stats, len(coco['annotations']), orphans)
        return data_list

    def _parse_annotation(self, ann: dict, img: dict, stats: Counter):
        """One instance dict, or None (counted in ``stats``) when skipped."""
        x, y, w, h = ann['bbox']
        inter_w = max(0, min(x + w, img['width']) - max(x, 0))
        inter_h = max(0, min(y + h, img['height']) - max(y, 0))
        if ann.get('ignore', False):
            reason = 'ignore'
        elif w < 1 or h < 1:
            # Before the intersection test: a box of negative size does
            # not intersect anything, but it is not "outside the image".
            reason = 'small'
        elif inter_w * inter_h == 0:
            reason = 'outside'
        elif ann.get('area', w * h) <= 0:
            reason = 'area'
        elif ann.get('category_id') not in self.cat2label:
            reason = 'category'
        else:
            reason = None
        if reason:
            stats[reason] += 1
            return None
        if x < 0 or y < 0 or x + w > img['width'] or y + h > img['height']:
            stats['partial'] += 1
        crowd = int(bool(ann.get('iscrowd', False)))
        stats['crowd'] += crowd
        return dict(
            bbox=[x, y, x + w, y + h],
            bbox_label=self.cat2label[ann['category_id']],
            ignore_flag=crowd)

    def _log_stats(self, stats: Counter, total: int, orphans: int) -> None:
        skipped = [f'{stats[k]} {text}' for k, text in _SKIP_REASONS.items()
                   if stats[k]]
        if orphans:
            skipped.append(f'{orphans} with an image_id not in "images"')
        notes = []
        if stats['partial']:
            notes.append(f'{stats["partial"]} boxes partly outside their '
                         'image kept (Resize clips them)')
        if stats['crowd']:
            notes.append(f'{stats["crowd"]} crowd boxes kept as ignored')
        if skipped or notes:
            n_skipped = sum(stats[k] for k in _SKIP_REASONS) + orphans
            msg = f'{self.ann_file}: skipped {n_skipped} of {total} ' \
                  'annotations'
            msg += f' ({", ".join(skipped)})' if skipped else ''
            msg += f'; {"; ".join(notes)}' if notes else ''
            print_log(msg, logger='current')
