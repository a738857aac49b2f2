"""RandomResize and RandomCrop: the drawn scales and windows (in
mmdetection's draw order), boxes with their labels and ignore flags, and
samples dropped by RandomCrop refetched by the dataset."""
import json

import cv2
import numpy as np
import pytest
import torch

from detkit.datasets import CocoDataset, DatasetSampleError
from detkit.datasets.transforms import RandomCrop, RandomResize
from detkit.engine.seeded_data import SeededDataset, SeededIndex
from detkit.registry import TRANSFORMS


def _results(h=40, w=50):
    img = np.arange(h * w * 3, dtype=np.int64).reshape(h, w, 3)
    return dict(
        img=(img % 251).astype(np.uint8), img_shape=(h, w),
        gt_bboxes=np.array([[5, 5, 15, 15], [40, 30, 50, 40], [0, 0, 50, 40],
                            [45, 0, 50, 5]], np.float32),
        gt_bboxes_labels=np.array([0, 1, 2, 3], np.int64),
        gt_ignore_flags=np.array([False, False, True, False]))


class _Draws:
    """Stand-in for np.random.randint / rand that records each call and
    returns the given values in turn."""

    def __init__(self, *values):
        self.values = list(values)
        self.calls = []

    def __call__(self, *args):
        self.calls.append(args)
        return self.values.pop(0)


# ----------------------------------------------------------- RandomResize
def test_random_resize_ratio_range_draw_and_keep_ratio():
    # lsj: scale (1024, 1024) times r ~ U(0.1, 2.0)
    aug = TRANSFORMS.build(dict(type='RandomResize', scale=(1024, 1024),
                                ratio_range=(0.1, 2.0), keep_ratio=True))
    np.random.seed(7)
    r = np.random.RandomState(7).random_sample() * 1.9 + 0.1
    side = int(1024 * r)
    out = aug(_results(h=48, w=64))
    # keep_ratio into (side, side): factor side / 64 (the long edge)
    new_w, new_h = int(64 * side / 64 + 0.5), int(48 * side / 64 + 0.5)
    assert out['scale'] == (side, side)
    assert out['img'].shape == (new_h, new_w, 3) and out['img_shape'] == (
        new_h, new_w)
    assert out['scale_factor'] == (new_w / 64, new_h / 48)
    sx, sy = out['scale_factor']
    np.testing.assert_allclose(
        out['gt_bboxes'][0], np.float32([5, 5, 15, 15]) *
        np.float32([sx, sy, sx, sy]))
    assert out['keep_ratio'] is True


def test_random_resize_two_scales_draw_each_edge(monkeypatch):
    # ms-3x: [(1333, 640), (1333, 800)] -> (1333, s), s in 640..800
    aug = RandomResize(scale=[(1333, 640), (1333, 800)], keep_ratio=True)
    # over many seeds every s in [640, 800] is reachable, nothing outside
    seen = set()
    for seed in range(3000):
        np.random.seed(seed)
        seen.add(aug._random_scale())
    assert seen == {(1333, s) for s in range(640, 801)}
    draws = _Draws(1333, 700)
    monkeypatch.setattr(np.random, 'randint', draws)
    out = aug(_results(h=480, w=640))
    # the first edges of both scales, then the second edges, bounds included
    assert draws.calls == [(1333, 1334), (640, 801)]
    assert out['scale'] == (1333, 700)
    # 480 x 640: factor min(1333 / 640, 700 / 480) = 700 / 480
    assert out['img_shape'] == (700, int(640 * 700 / 480 + 0.5)) == (700,
                                                                      933)


def test_random_resize_passes_resize_arguments_and_checks_scale():
    aug = RandomResize(scale=(20, 20), ratio_range=(2.0, 2.0),
                       keep_ratio=False, clip_object_border=False)
    res = _results(h=10, w=10)
    res['gt_bboxes'] = np.array([[5, 5, 15, 12]], np.float32)
    res['gt_bboxes_labels'] = res['gt_bboxes_labels'][:1]
    res['gt_ignore_flags'] = res['gt_ignore_flags'][:1]
    out = aug(res)
    assert out['img_shape'] == (40, 40)
    # not clipped to the 40 x 40 image
    assert out['gt_bboxes'].tolist() == [[20, 20, 60, 48]]
    with pytest.raises(ValueError, match='ratio_range=\\(min, max\\)'):
        RandomResize(scale=(1333, 800))
    with pytest.raises(ValueError, match='two \\(w, h\\) pairs'):
        RandomResize(scale=[(1333, 640), (1333, 800), (1333, 900)])
    with pytest.raises(TypeError, match="'keep_ratoi'"):
        TRANSFORMS.build(dict(type='RandomResize', scale=(10, 10),
                              ratio_range=(1, 2), keep_ratoi=True))


# ------------------------------------------------------------- RandomCrop
def test_random_crop_absolute_by_hand(monkeypatch):
    draws = _Draws(10, 12)  # top, left
    monkeypatch.setattr(np.random, 'randint', draws)
    res = _results()
    img = res['img'].copy()
    out = RandomCrop(crop_size=(30, 20))(res)  # (w, h)
    # window 20 x 30 (h x w): top in 0..20, left in 0..20
    assert draws.calls == [(0, 21), (0, 21)]
    assert out['img'].shape == (20, 30, 3) and out['img_shape'] == (20, 30)
    assert np.array_equal(out['img'], img[10:30, 12:42])
    # box 0 [5, 5, 15, 15] -> [-7, -5, 3, 5] -> clipped [0, 0, 3, 5];
    # box 1 [40, 30, 50, 40] -> [28, 20, 30, 20]: y1 = 20 is not < 20;
    # box 2 (ignored) covers the window; box 3 [45, 0, 50, 5] -> x1 = 30
    assert out['gt_bboxes'].tolist() == [[0, 0, 3, 5], [0, 0, 30, 20]]
    assert out['gt_bboxes_labels'].tolist() == [0, 2]
    assert out['gt_ignore_flags'].tolist() == [False, True]


def test_random_crop_without_border_clipping(monkeypatch):
    monkeypatch.setattr(np.random, 'randint', _Draws(10, 12))
    out = RandomCrop(crop_size=(30, 20), bbox_clip_border=False)(_results())
    # same survivors, coordinates only shifted
    assert out['gt_bboxes'].tolist() == [[-7, -5, 3, 5], [-12, -10, 38, 30]]
    assert out['gt_bboxes_labels'].tolist() == [0, 2]


def test_random_crop_negative_crops(monkeypatch):
    # A 10 x 10 window at the top-right corner holds only box 3 (label 3)
    monkeypatch.setattr(np.random, 'randint', _Draws(0, 40))
    out = RandomCrop(crop_size=(10, 10))(_results())
    assert out['gt_bboxes_labels'].tolist() == [2, 3]
    # boxes 0 and 1 only; the window x in [30, 40), y in [0, 10) holds none
    res = _results()
    for key in ('gt_bboxes', 'gt_bboxes_labels', 'gt_ignore_flags'):
        res[key] = res[key][:2]  # boxes 0 and 1
    monkeypatch.setattr(np.random, 'randint', _Draws(0, 30))
    assert RandomCrop(crop_size=(10, 10))(dict(res)) is None
    monkeypatch.setattr(np.random, 'randint', _Draws(0, 30))
    out = RandomCrop(crop_size=(10, 10), allow_negative_crop=True)(res)
    assert out['gt_bboxes'].shape == (0, 4)
    assert out['gt_bboxes_labels'].shape == (0, )
    assert out['gt_ignore_flags'].shape == (0, )
    assert out['img_shape'] == (10, 10)


def test_random_crop_absolute_range_and_small_images(monkeypatch):
    # lsj: crop_size=(1024, 1024) absolute_range: an image smaller than
    # 1024 is kept whole (the window is min(h, 1024) x min(w, 1024))
    draws = _Draws(40, 50, 0, 0)
    monkeypatch.setattr(np.random, 'randint', draws)
    out = RandomCrop(crop_size=(1024, 1024), crop_type='absolute_range',
                     recompute_bbox=True, allow_negative_crop=True)(
                         _results())
    assert draws.calls == [(40, 41), (50, 51), (0, 1), (0, 1)]
    assert out['img_shape'] == (40, 50)
    assert out['gt_bboxes'].tolist() == _results()['gt_bboxes'].tolist()
    # a range: height from [min(h, 16), min(h, 64)], then width likewise
    draws = _Draws(30, 20, 5, 7)
    monkeypatch.setattr(np.random, 'randint', draws)
    out = RandomCrop(crop_size=(16, 64), crop_type='absolute_range')(
        _results())
    assert draws.calls == [(16, 41), (16, 51), (0, 11), (0, 31)]
    assert out['img_shape'] == (30, 20)


def test_random_crop_relative_types(monkeypatch):
    # relative: crop_size = (rw, rh)
    monkeypatch.setattr(np.random, 'randint', _Draws(0, 0))
    out = RandomCrop(crop_size=(0.5, 0.25), crop_type='relative',
                     allow_negative_crop=True)(_results())
    assert out['img_shape'] == (int(40 * 0.25 + 0.5), int(50 * 0.5 + 0.5))
    # relative_range: (rh_min, rw_min) + rand(2) * (1 - them)
    rand = _Draws(np.array([0.5, 0.0]))
    monkeypatch.setattr(np.random, 'rand', rand)
    monkeypatch.setattr(np.random, 'randint', _Draws(0, 0))
    out = RandomCrop(crop_size=(0.6, 0.8), crop_type='relative_range',
                     allow_negative_crop=True)(_results())
    assert rand.calls == [(2, )]
    # rh = 0.6 + 0.5 * 0.4 = 0.8, rw = 0.8 -> 32 x 40
    assert out['img_shape'] == (32, 40)


def test_random_crop_checks_its_arguments():
    with pytest.raises(ValueError, match="crop_type must be one of"):
        RandomCrop(crop_size=(10, 10), crop_type='centre')
    with pytest.raises(ValueError, match='two positive ints'):
        RandomCrop(crop_size=(0.5, 0.5))
    with pytest.raises(ValueError, match='min <= max'):
        RandomCrop(crop_size=(64, 16), crop_type='absolute_range')
    with pytest.raises(ValueError, match='ratios in \\(0, 1\\]'):
        RandomCrop(crop_size=(2, 1), crop_type='relative')
    with pytest.raises(ValueError, match='empty 0x'):
        RandomCrop(crop_size=(0.5, 0.01), crop_type='relative')(_results())


# ------------------------------------- a dropped sample through the dataset
def _crop_dataset(tmp_path, test_mode=False, allow_negative_crop=False):
    """Image 0 has one box in its bottom-right corner, image 1 one box
    over the whole image; an 8 x 8 crop misses image 0's box in most
    draws."""
    for name in ('a.png', 'b.png'):
        cv2.imwrite(str(tmp_path / name),
                    np.random.RandomState(1).randint(
                        0, 255, (64, 64, 3)).astype(np.uint8))
    ann = dict(
        images=[dict(id=0, file_name='a.png', width=64, height=64),
                dict(id=1, file_name='b.png', width=64, height=64)],
        annotations=[
            dict(id=1, image_id=0, category_id=1, bbox=[58, 58, 6, 6],
                 area=36, iscrowd=0),
            dict(id=2, image_id=1, category_id=1, bbox=[0, 0, 64, 64],
                 area=4096, iscrowd=0)],
        categories=[dict(id=1, name='cell')])
    (tmp_path / 'ann.json').write_text(json.dumps(ann))
    pipeline = [
        dict(type='LoadImageFromFile'),
        dict(type='LoadAnnotations', with_bbox=True),
        dict(type='RandomCrop', crop_size=(8, 8),
             allow_negative_crop=allow_negative_crop),
        dict(type='PackDetInputs')
    ]
    return CocoDataset(ann_file=str(tmp_path / 'ann.json'),
                       data_prefix=dict(img=str(tmp_path) + '/'),
                       metainfo=dict(classes=('cell', )), pipeline=pipeline,
                       test_mode=test_mode)


def test_a_dropped_crop_fetches_another_index(tmp_path):
    dataset = _crop_dataset(tmp_path)
    raw = TRANSFORMS.build(dict(type='RandomCrop', crop_size=(8, 8)))
    dropped = 0
    for seed in range(20):
        # what the crop alone does to image 0 with this seed
        np.random.seed(seed)
        results = dict(img=np.zeros((64, 64, 3), np.uint8),
                       gt_bboxes=np.float32([[58, 58, 64, 64]]),
                       gt_bboxes_labels=np.array([0]))
        dropped += raw(results) is None
        # the dataset never returns None and never an empty crop
        np.random.seed(seed)
        sample = dataset[0]['data_samples']
        assert len(sample.gt_instances.bboxes) == 1
    assert dropped >= 15  # the refetch really was exercised

    # the same seeded index gives the same sample, refetches included, as
    # a resumed run needs
    seeded = SeededDataset(dataset)
    first = seeded[SeededIndex(0, 1234)]
    again = seeded[SeededIndex(0, 1234)]
    assert first['data_samples'].img_id == again['data_samples'].img_id
    assert torch.equal(first['inputs'], again['inputs'])
    assert torch.equal(first['data_samples'].gt_instances.bboxes,
                       again['data_samples'].gt_instances.bboxes)


def test_negative_crops_allowed_and_the_test_mode_error(tmp_path):
    np.random.seed(0)
    sample = _crop_dataset(tmp_path, allow_negative_crop=True)[0]
    assert sample['data_samples'].img_id == 0
    assert sample['inputs'].shape == (3, 8, 8)
    np.random.seed(0)
    with pytest.raises(DatasetSampleError,
                       match='test pipeline returned None'):
        _crop_dataset(tmp_path, test_mode=True)[0]
