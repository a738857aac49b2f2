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
file and the image or annotation id; so do image ids that are not integers
in ``test_mode`` (COCO evaluation needs integers). Every finding goes
through the dataset's ``audit`` (see ``AnnotationAudit``), which
``tools/misc/check_dataset.py`` reads.
"""
import colorsys
import json
import math
import os
import os.path as osp
from collections import defaultdict
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


def missing_path_hint(path: str) -> str:
    """A hint for a local ``path`` that does not exist because a folder
    name ran into the file name (``data_root = 'data/bccd'`` without its
    trailing slash, then ``data_root + 'val.json'``): ``''``, or
    ``" ('data/bccd/val.json' exists: ...)"``."""
    path = str(path)
    if '://' in path or osp.exists(path):
        return ''
    parent = osp.dirname(path)
    while parent and not osp.isdir(parent):
        parent = osp.dirname(parent)
    rest = osp.relpath(path, parent or '.').split(os.sep)
    first, tail = rest[0], rest[1:]
    for cut in range(1, len(first)):
        candidate = osp.join(parent, first[:cut], first[cut:], *tail)
        if osp.exists(candidate):
            folder = osp.join(parent, first[:cut]) + '/'
            return (f'; {candidate!r} does: a folder path lost its trailing '
                    f"slash when joined. Write it as {folder!r} (e.g. "
                    f'data_root = {folder!r}) or join with os.path.join')
    return ''


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
                f'{self.data_root!r}){missing_path_hint(self.ann_file)}.'
            ) from None
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
        """``{image id: image entry}``; problems go to ``self.audit``."""
        audit = self.audit
        by_id = {}
        # Ids of entries refused (non-strict audit only): their annotations
        # are not orphans.
        self._refused_img_ids = set()
        for index, img in enumerate(images):
            img_id = img.get('id')
            where = f'{self.ann_file}: image id={img_id!r}'
            here = dict(image_index=index, img_id=img_id,
                        file_name=img.get('file_name'))
            if img_id is None:
                audit.error('image_without_id', f'{self.ann_file}: image '
                            f'entry {img} has no "id"', **here)
                continue
            if img_id in by_id:
                audit.error('duplicate_image_id', f'{where} appears twice in '
                            '"images"; image ids must be unique', **here)
                continue
            if 'file_name' not in img:
                audit.error('image_without_file_name',
                            f'{where} has no "file_name"', **here)
                continue
            bad_size = [(key, img.get(key)) for key in ('width', 'height')
                        if not _number(img.get(key)) or img.get(key) <= 0]
            if bad_size:
                key, value = bad_size[0]
                audit.error(
                    'image_size',
                    f'{where} ({img["file_name"]}) has {key}={value!r}; '
                    'each image needs positive "width" and "height" in '
                    'pixels (read them from the image files and add them to '
                    'the json)', **here)
                self._refused_img_ids.add(img_id)
                continue
            if isinstance(img_id, bool) or not isinstance(img_id, int):
                self._non_integer_id(img_id, img, here)
            by_id[img_id] = img
        return by_id

    def _non_integer_id(self, img_id, img: dict, here: dict) -> None:
        """COCO ids are integers: training does not care, but pycocotools
        (CocoMetric) fails on other ids, after the whole inference. Test
        datasets refuse them at load time."""
        if not self.test_mode:
            self.audit.note('image_id_not_int', **here)
            return
        self.audit.error(
            'image_id_not_int',
            f'{self.ann_file}: image id={img_id!r} ({img["file_name"]}) is '
            f'a {type(img_id).__name__}, but COCO evaluation (CocoMetric, '
            'pycocotools) needs integer image ids. Renumber the images with '
            'integers (and the image_id of their annotations), e.g. with '
            'python tools/misc/check_dataset.py CONFIG --split val --fix '
            'OUT.json.', **here)

    def _check_annotation(self, ann: dict, index: int) -> bool:
        """Whether ``ann`` has a usable ``bbox``; errors go to the audit."""
        bbox = ann.get('bbox')
        if not isinstance(bbox, (list, tuple)) or len(bbox) != 4 or not all(
                _number(v) for v in bbox):
            self.audit.error(
                'bad_bbox',
                f'{self.ann_file}: annotation id={ann.get("id")!r} (image '
                f'id={ann.get("image_id")!r}) has bbox={bbox!r}; expected '
                'four finite numbers [x, y, w, h]', ann_index=index,
                ann_id=ann.get('id'), img_id=ann.get('image_id'))
            return False
        return True

    def load_data_list(self) -> List[dict]:
        coco = self._read_json()
        self._match_categories(coco['categories'])
        images = self._check_images(coco['images'])
        anns_of = defaultdict(list)
        ann_ids = set()
        for index, ann in enumerate(coco['annotations']):
            if 'id' in ann:
                if ann['id'] in ann_ids:
                    self.audit.error(
                        'duplicate_ann_id',
                        f'{self.ann_file}: annotation id={ann["id"]!r} '
                        'appears twice; annotation ids must be unique',
                        ann_index=index, ann_id=ann['id'],
                        img_id=ann.get('image_id'))
                ann_ids.add(ann['id'])
            if not self._check_annotation(ann, index):
                continue
            if ann.get('image_id') not in images:
                if ann.get('image_id') in self._refused_img_ids:
                    continue  # its image entry was reported already
                self.audit.skip('orphan', ann_index=index,
                                ann_id=ann.get('id'),
                                img_id=ann.get('image_id'))
                continue
            anns_of[ann['image_id']].append((index, ann))

        data_list = []
        for img_id, img in images.items():
            instances = [
                inst for inst in (self._parse_annotation(a, img, i)
                                  for i, a in anns_of[img_id]) if inst
            ]
            data_list.append(
                dict(
                    img_path=osp.join(self.data_prefix.get('img', ''),
                                      img['file_name']),
                    img_id=img_id,
                    width=int(img['width']),
                    height=int(img['height']),
                    instances=instances))
        self._log_stats(len(coco['annotations']))
        return data_list

    def _parse_annotation(self, ann: dict, img: dict, index: int):
        """One instance dict, or None (recorded in the audit) when
        skipped."""
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
        where = dict(ann_index=index, ann_id=ann.get('id'), img_id=img['id'])
        if reason:
            self.audit.skip(reason, **where)
            return None
        if x < 0 or y < 0 or x + w > img['width'] or y + h > img['height']:
            self.audit.note('partial', **where)
        crowd = int(bool(ann.get('iscrowd', False)))
        if crowd:
            self.audit.note('crowd', **where)
        return dict(
            bbox=[x, y, x + w, y + h],
            bbox_label=self.cat2label[ann['category_id']],
            ignore_flag=crowd)

    def _log_stats(self, total: int) -> None:
        stats = self.audit.counts
        skipped = [f'{stats[k]} {text}' for k, text in _SKIP_REASONS.items()
                   if stats[k]]
        if stats['orphan']:
            skipped.append(f'{stats["orphan"]} with an image_id not in '
                           '"images"')
        notes = []
        if stats['partial']:
            notes.append(f'{stats["partial"]} boxes partly outside their '
                         'image kept (Resize clips them)')
        if stats['crowd']:
            notes.append(f'{stats["crowd"]} crowd boxes kept as ignored')
        if skipped or notes:
            n_skipped = sum(stats[k] for k in _SKIP_REASONS) + stats['orphan']
            msg = f'{self.ann_file}: skipped {n_skipped} of {total} ' \
                  'annotations'
            msg += f' ({", ".join(skipped)})' if skipped else ''
            msg += f'; {"; ".join(notes)}' if notes else ''
            print_log(msg, logger='current')
