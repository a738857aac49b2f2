"""FilterAnnotations: strict size test, aligned labels and ignore flags,
keep_empty, and what detkit cannot filter (masks)."""
import numpy as np
import pytest

from detkit.datasets.transforms import FilterAnnotations
from detkit.registry import TRANSFORMS


def _results():
    return dict(
        img=np.zeros((20, 20, 3), np.uint8),
        # widths 10, 0.01, 0.02, 5; heights 10, 5, 0.02, 0.005
        gt_bboxes=np.array([[0, 0, 10, 10], [3, 3, 3.01, 8],
                            [1, 1, 1.02, 1.02], [2, 2, 7, 2.005]],
                           np.float32),
        gt_bboxes_labels=np.array([4, 5, 6, 7], np.int64),
        gt_ignore_flags=np.array([False, True, False, True]))


def test_lsj_threshold_keeps_boxes_strictly_larger():
    # lsj-200e: min_gt_bbox_wh=(1e-2, 1e-2)
    out = TRANSFORMS.build(dict(type='FilterAnnotations',
                                min_gt_bbox_wh=(1e-2, 1e-2)))(_results())
    # box 1: w = 3.01 - 3 = 0.00999... in float32, not > 0.01; box 3: h =
    # 0.005; boxes 0 and 2 stay
    widths = _results()['gt_bboxes'][:, 2] - _results()['gt_bboxes'][:, 0]
    assert not widths[1] > 1e-2
    assert out['gt_bboxes'].tolist() == _results()['gt_bboxes'][[0, 2]].\
        tolist()
    assert out['gt_bboxes_labels'].tolist() == [4, 6]
    assert out['gt_ignore_flags'].tolist() == [False, False]


def test_default_threshold_and_equality():
    res = _results()
    res['gt_bboxes'] = np.array([[0, 0, 1, 5], [0, 0, 2, 2], [0, 0, 5, 1]],
                                np.float32)
    res['gt_bboxes_labels'] = res['gt_bboxes_labels'][:3]
    res['gt_ignore_flags'] = res['gt_ignore_flags'][:3]
    out = FilterAnnotations()(res)  # (1, 1): a width of 1 is not > 1
    assert out['gt_bboxes_labels'].tolist() == [5]
    assert out['gt_ignore_flags'].tolist() == [True]


def test_keep_empty_true_drops_the_sample():
    res = _results()
    assert FilterAnnotations(min_gt_bbox_wh=(100, 100))(res) is None
    out = FilterAnnotations(min_gt_bbox_wh=(100, 100), keep_empty=False)(res)
    assert out['gt_bboxes'].shape == (0, 4)
    assert out['gt_bboxes_labels'].shape == (0, )
    assert out['gt_ignore_flags'].shape == (0, )


def test_a_sample_without_boxes_passes():
    res = dict(gt_bboxes=np.zeros((0, 4), np.float32),
               gt_bboxes_labels=np.zeros(0, np.int64))
    assert FilterAnnotations()(res) is res


def test_masks_are_refused_and_a_missing_box_key_is_named():
    FilterAnnotations(min_gt_mask_area=5)  # accepted, unused without masks
    with pytest.raises(NotImplementedError, match='by_mask=True'):
        FilterAnnotations(by_mask=True)
    with pytest.raises(ValueError, match='would test nothing'):
        FilterAnnotations(by_box=False)
    with pytest.raises(KeyError, match='FilterAnnotations needs'):
        FilterAnnotations()(dict(img=np.zeros((2, 2, 3))))
