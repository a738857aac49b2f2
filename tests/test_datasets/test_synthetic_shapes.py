"""The synthetic shapes dataset: determinism, tight boxes, valid COCO."""
import json
import math
import os
import os.path as osp
from collections import Counter

import cv2
import numpy as np
import pytest

from detkit.datasets import CocoDataset
from detkit.datasets.synthetic_shapes import (SHAPES_CLASSES,
                                              generate_shapes_dataset,
                                              render_image, shape_mask)

SMALL = dict(num_train=40, num_val=8, img_size=128)


@pytest.fixture(scope='module')
def shapes(tmp_path_factory):
    return generate_shapes_dataset(str(tmp_path_factory.mktemp('shapes')),
                                   **SMALL)


def _files(root):
    out = {}
    for folder, _, names in os.walk(root):
        for name in names:
            path = osp.join(folder, name)
            with open(path, 'rb') as f:
                out[osp.relpath(path, root)] = f.read()
    return out


def test_same_seed_gives_identical_bytes(shapes, tmp_path):
    again = generate_shapes_dataset(str(tmp_path / 'again'), **SMALL)
    first, second = _files(shapes['data_root']), _files(again['data_root'])
    assert len(first) == 40 + 8 + 2
    assert first == second
    other = generate_shapes_dataset(str(tmp_path / 'other'), seed=1,
                                    **SMALL)
    assert _files(other['data_root'])['annotations/train.json'] != first[
        'annotations/train.json']


def test_val_split_does_not_depend_on_num_train(shapes, tmp_path):
    fewer = generate_shapes_dataset(str(tmp_path / 'fewer'), num_train=3,
                                    num_val=8, img_size=128)
    a, b = _files(shapes['data_root']), _files(fewer['data_root'])
    assert a['images/val_000005.jpg'] == b['images/val_000005.jpg']


def test_coco_json_is_valid_and_consistent(shapes):
    coco_api = pytest.importorskip('pycocotools.coco')
    api = coco_api.COCO(shapes['train_ann_file'])
    assert [c['name'] for c in api.loadCats(api.getCatIds())] == list(
        SHAPES_CLASSES)
    assert api.getCatIds() == [1, 2, 3, 4, 5]
    assert len(api.getImgIds()) == 40
    with open(shapes['val_ann_file']) as f:
        val = json.load(f)
    # image ids are unique across the two splits
    assert [img['id'] for img in val['images']] == list(range(41, 49))
    for ann in api.loadAnns(api.getAnnIds()):
        img = api.imgs[ann['image_id']]
        x, y, w, h = ann['bbox']
        assert ann['iscrowd'] == 0 and ann['area'] > 0
        assert 0 <= x and 0 <= y and x + w <= img['width'] and \
            y + h <= img['height']
        assert ann['area'] <= w * h
    for img in api.imgs.values():
        assert len(api.getAnnIds(imgIds=[img['id']])) >= 1
        assert osp.isfile(osp.join(shapes['img_dir'], img['file_name']))
        assert (img['width'], img['height']) == (128, 128)


def test_class_counts_and_loading_through_coco_dataset(shapes):
    with open(shapes['train_ann_file']) as f:
        coco = json.load(f)
    counts = Counter(a['category_id'] for a in coco['annotations'])
    assert set(counts) == {1, 2, 3, 4, 5}
    assert min(counts.values()) >= 10  # every class is well represented
    ds = CocoDataset(data_root=shapes['data_root'],
                     ann_file='annotations/train.json',
                     data_prefix=dict(img='images/'),
                     metainfo=dict(classes=SHAPES_CLASSES))
    labels = Counter(lbl for i in range(len(ds)) for lbl in ds.get_cat_ids(i))
    # nothing is dropped by the parser
    assert labels == {k - 1: v for k, v in counts.items()}
    sides = [min(a['bbox'][2:]) for a in coco['annotations']]
    assert min(sides) >= 6 and max(max(a['bbox'][2:])
                                   for a in coco['annotations']) <= 0.6 * 128
    assert 1 <= len(coco['annotations']) / 40 <= 6


def test_known_shapes_have_the_hand_computed_box():
    # circle of diameter 21 at (50, 50): radius round(10.5) = 10 -> 40..60
    mask = shape_mask(0, (50, 50), 21, 0.0, (100, 100))
    ys, xs = np.nonzero(mask)
    assert (xs.min(), xs.max(), ys.min(), ys.max()) == (40, 60, 40, 60)
    # square with corners on a circle of radius 10 * sqrt(2), unrotated:
    # corners (40, 40)..(60, 60), 21 x 21 pixels all set
    mask = shape_mask(1, (50, 50), 20 * math.sqrt(2), 0.0, (100, 100))
    assert mask.sum() == 21 * 21 and mask[40:61, 40:61].all()


@pytest.mark.parametrize('seed', range(6))
def test_rendered_boxes_are_tight_and_objects_visible(seed):
    img, objects = render_image(np.random.default_rng(seed), (160, 128))
    assert img.shape == (128, 160, 3) and img.dtype == np.uint8
    assert 1 <= len(objects) <= 6
    for obj in objects:
        x, y, w, h = obj['bbox']
        mask = obj['mask']
        ys, xs = np.nonzero(mask)
        # tight: every visible pixel inside, every edge touched
        assert (xs.min(), ys.min()) == (x, y)
        assert (xs.max() + 1, ys.max() + 1) == (x + w, y + h)
        assert obj['area'] == mask.sum() >= 0.8 * obj['full']
        # the shape stands out from the ring of pixels around it
        ring = cv2.dilate(mask.astype(np.uint8), np.ones((5, 5))) > 0
        ring &= ~mask
        for other in objects:
            ring &= ~other['mask']
        if ring.sum() > 20:
            diff = np.abs(img[mask].mean(0) - img[ring].mean(0)).max()
            assert diff > 30


def _fill_fraction_of_squares(max_rotation):
    """Pixel count / box area of every lone square in 60 one-shape
    images."""
    fractions = []
    for seed in range(60):
        _, objects = render_image(np.random.default_rng(seed), (96, 96),
                                  max_objects=1, min_obj_size=16,
                                  max_rotation=max_rotation)
        for obj in objects:
            if obj['label'] == SHAPES_CLASSES.index('square'):
                w, h = obj['bbox'][2:]
                fractions.append(obj['area'] / (w * h))
    return fractions


def test_max_rotation_zero_draws_upright_shapes():
    upright = _fill_fraction_of_squares(0)
    assert len(upright) >= 5
    # an axis-aligned square fills its box exactly
    assert all(f == 1.0 for f in upright)
    turned = _fill_fraction_of_squares(180)
    assert len(turned) >= 5
    # a square turned by t fills 1 / (|cos t| + |sin t|)^2 of its box,
    # down to 1/2 at 45 degrees
    assert min(turned) < 0.75 and sum(f < 0.95 for f in turned) >= 3
