"""PackDetInputs: image tensor, gt/ignored split, meta keys."""
import numpy as np
import torch

from detkit.datasets.transforms import PackDetInputs, RandomFlip
from detkit.structures import DetDataSample


def _results():
    img = np.arange(2 * 3 * 3, dtype=np.uint8).reshape(2, 3, 3)
    return dict(
        img=img,
        img_id=7,
        img_path='a/b.jpg',
        ori_shape=(2, 3),
        img_shape=(2, 3),
        scale_factor=(1.0, 1.0),
        flip=False,
        flip_direction=None,
        width=3,  # not a meta key: must not be packed
        gt_bboxes=np.array([[0, 0, 1, 1], [1, 0, 3, 2], [0, 1, 2, 2]],
                           np.float32),
        gt_bboxes_labels=np.array([4, 5, 6], np.int64),
        gt_ignore_flags=np.array([False, True, False]))


def test_pack_splits_ignored_boxes_and_converts_image():
    packed = PackDetInputs()(_results())
    inputs = packed['inputs']
    assert inputs.dtype == torch.uint8 and inputs.shape == (3, 2, 3)
    assert inputs.is_contiguous()
    # CHW: channel c of pixel (y, x) is img[y, x, c] = 9y + 3x + c
    assert inputs[2, 1, 0].item() == 9 + 2
    assert inputs[0, 0, 2].item() == 6
    sample = packed['data_samples']
    assert isinstance(sample, DetDataSample)
    gt, ignored = sample.gt_instances, sample.ignored_instances
    assert gt.bboxes.dtype == torch.float32
    assert gt.labels.dtype == torch.int64
    assert gt.bboxes.tolist() == [[0, 0, 1, 1], [0, 1, 2, 2]]
    assert gt.labels.tolist() == [4, 6]
    assert ignored.bboxes.tolist() == [[1, 0, 3, 2]]
    assert ignored.labels.tolist() == [5]
    assert sample.metainfo == dict(
        img_id=7, img_path='a/b.jpg', ori_shape=(2, 3), img_shape=(2, 3),
        scale_factor=(1.0, 1.0), flip=False, flip_direction=None)


def test_pack_flipped_view_and_missing_meta_keys():
    results = RandomFlip(prob=1.0)(_results())
    assert not results['img'].flags.c_contiguous  # np.flip gives a view
    for key in ('scale_factor', 'img_id'):
        del results[key]
    packed = PackDetInputs()(results)
    inputs = packed['inputs']
    assert inputs.is_contiguous()
    # flipped horizontally: pixel (0, 0) comes from (0, 2): 6, 7, 8
    assert inputs[:, 0, 0].tolist() == [6, 7, 8]
    meta = packed['data_samples'].metainfo
    assert 'scale_factor' not in meta and 'img_id' not in meta
    assert meta['flip'] is True and meta['flip_direction'] == 'horizontal'
    # W = 3: [0, 0, 1, 1] -> [2, 0, 3, 1]
    assert packed['data_samples'].gt_instances.bboxes[0].tolist() == [
        2, 0, 3, 1
    ]


def test_pack_without_annotations_or_flags():
    packed = PackDetInputs(meta_keys=('img_id', ))(dict(
        img=np.zeros((4, 5), np.uint8), img_id=1))
    assert packed['inputs'].shape == (1, 4, 5)
    assert len(packed['data_samples'].gt_instances) == 0
    assert packed['data_samples'].metainfo == dict(img_id=1)
    results = _results()
    del results['gt_ignore_flags']
    gt = PackDetInputs()(results)['data_samples'].gt_instances
    assert gt.labels.tolist() == [4, 5, 6]
    # empty boxes keep their (0, 4) float32 shape
    results = _results()
    results['gt_bboxes'] = np.zeros((0, 4), np.float32)
    results['gt_bboxes_labels'] = np.zeros((0, ), np.int64)
    results['gt_ignore_flags'] = np.zeros((0, ), bool)
    sample = PackDetInputs()(results)['data_samples']
    assert sample.gt_instances.bboxes.shape == (0, 4)
    assert sample.ignored_instances.bboxes.dtype == torch.float32


def test_pack_keeps_float_images_float():
    results = _results()
    results['img'] = results['img'].astype(np.float32) + 0.5
    inputs = PackDetInputs()(results)['inputs']
    assert inputs.dtype == torch.float32
    assert inputs[1, 0, 1].item() == 4.5
