"""Resize, RandomChoiceResize, RandomFlip and Pad, with numbers by hand."""
import numpy as np
import pytest

from detkit.datasets.transforms import (Pad, RandomChoiceResize, RandomFlip,
                                        Resize)
from detkit.registry import TRANSFORMS


def _results(h, w, boxes=None, value=0):
    results = dict(img=np.full((h, w, 3), value, np.uint8), img_shape=(h, w),
                   ori_shape=(h, w))
    if boxes is not None:
        results['gt_bboxes'] = np.array(boxes, np.float32).reshape(-1, 4)
    return results


# ---------------------------------------------------------------- Resize
def test_resize_keep_ratio_coco_scale_on_bccd_size():
    # 640x480 into (1333, 800): s = min(1333/640, 800/480) = 5/3,
    # new_w = int(640 * 5/3 + 0.5) = int(1067.17) = 1067, new_h = 800.
    results = _results(480, 640, [[10, 20, 110, 220], [600, 400, 700, 500]])
    results = Resize(scale=(1333, 800), keep_ratio=True)(results)
    assert results['img'].shape == (800, 1067, 3)
    assert results['img_shape'] == (800, 1067)
    assert results['scale'] == (1333, 800)
    assert results['keep_ratio'] is True
    # The realised factors differ: 1067/640 vs 800/480.
    assert results['scale_factor'] == (1.6671875, 800 / 480)
    boxes = results['gt_bboxes']
    assert boxes.dtype == np.float32
    np.testing.assert_allclose(
        boxes,
        [[16.671875, 33.333333, 183.390625, 366.666667],
         # x2 = 700 * 1.6671875 = 1167.03 and y2 = 833.3 clip to the image
         [1000.3125, 666.666667, 1067, 800]],
        rtol=1e-6)


def test_resize_keep_ratio_portrait_and_long_edge_bound():
    results = Resize(scale=(1333, 800), keep_ratio=True)(_results(640, 480))
    assert results['img_shape'] == (1067, 800)
    # 2000x500: the long edge binds, s = 1333/2000 = 0.6665:
    # new_w = int(1333.0 + 0.5) = 1333, new_h = int(333.25 + 0.5) = 333.
    results = Resize(scale=(800, 1333), keep_ratio=True)(_results(500, 2000))
    assert results['img_shape'] == (333, 1333)
    assert results['scale_factor'] == (1333 / 2000, 333 / 500)


def test_resize_without_keep_ratio_and_clip_off():
    results = _results(480, 640, [[64, 48, 320, 240], [600, 0, 700, 480]])
    results = Resize(scale=(300, 300), clip_object_border=False)(results)
    assert results['img'].shape == (300, 300, 3)
    assert results['scale_factor'] == (300 / 640, 300 / 480)
    # x * 0.46875, y * 0.625; the second box is not clipped (328.125)
    np.testing.assert_allclose(
        results['gt_bboxes'],
        [[30, 30, 150, 150], [281.25, 0, 328.125, 300]])
    # An int scale is square.
    assert Resize(scale=64)(_results(10, 20))['img_shape'] == (64, 64)


def test_resize_by_scale_factor_rounds_half_up():
    # 101x51 by 0.5: int(101 * 0.5 + 0.5) = 51, int(51 * 0.5 + 0.5) = 26
    results = Resize(scale_factor=0.5)(_results(51, 101, [[0, 0, 101, 51]]))
    assert results['img_shape'] == (26, 51)
    assert results['scale_factor'] == (51 / 101, 26 / 51)
    np.testing.assert_allclose(results['gt_bboxes'], [[0, 0, 51, 26]],
                               rtol=1e-6)
    results = Resize(scale_factor=(2.0, 0.5))(_results(10, 10))
    assert results['img_shape'] == (5, 20)


def test_resize_bilinear_pixels_match_opencv_half_pixel_centres():
    # A 1x2 row [0, 100] widened to 4: the source positions of the output
    # centres are -0.25, 0.25, 0.75, 1.25 -> 0, 25, 75, 100.
    row = np.zeros((1, 2, 3), np.uint8)
    row[0, 1] = 100
    out = Resize(scale=(4, 1))(dict(img=row))['img']
    np.testing.assert_array_equal(out[0, :, 0], [0, 25, 75, 100])
    out = Resize(scale=(4, 1), interpolation='nearest')(dict(img=row))['img']
    np.testing.assert_array_equal(out[0, :, 0], [0, 0, 100, 100])


def test_resize_errors():
    with pytest.raises(ValueError, match='scale'):
        Resize()
    with pytest.raises(ValueError, match='interpolation'):
        Resize(scale=10, interpolation='cubic-ish')
    with pytest.raises(KeyError, match='LoadImageFromFile'):
        Resize(scale=10)(dict(img_path='x.jpg'))


def test_random_choice_resize_follows_numpy_randint():
    transform = TRANSFORMS.build(
        dict(type='RandomChoiceResize', scales=[(100, 50), (200, 100)],
             keep_ratio=True))
    sizes = {0: (50, 100), 1: (100, 200)}  # an 80x40 image fits exactly
    for seed in range(6):
        np.random.seed(seed)
        expected = np.random.randint(2)
        np.random.seed(seed)
        results = transform(_results(40, 80, [[8, 4, 16, 12]]))
        assert results['scale_idx'] == expected
        assert results['img_shape'] == sizes[expected]
        factor = 1.25 if expected == 0 else 2.5
        np.testing.assert_allclose(results['gt_bboxes'],
                                   [[8 * factor, 4 * factor, 16 * factor,
                                     12 * factor]])


# ------------------------------------------------------------ RandomFlip
@pytest.mark.parametrize('direction, box', [
    ('horizontal', [2, 0, 3, 1]),  # x' = 3 - x
    ('vertical', [0, 1, 1, 2]),  # y' = 2 - y
    ('diagonal', [2, 1, 3, 2]),
])
def test_flip_boxes_and_pixels(direction, box):
    results = _results(2, 3, [[0, 0, 1, 1]])
    results['img'] = np.arange(18, dtype=np.uint8).reshape(2, 3, 3)
    original = results['img'].copy()
    results = RandomFlip(prob=1.0, direction=direction)(results)
    assert results['flip'] is True
    assert results['flip_direction'] == direction
    np.testing.assert_array_equal(results['gt_bboxes'], [box])
    axis = dict(horizontal=1, vertical=0, diagonal=(0, 1))[direction]
    np.testing.assert_array_equal(results['img'], np.flip(original, axis))
    assert results['img'][0, 0, 0] == dict(horizontal=6, vertical=9,
                                           diagonal=15)[direction]


def test_flip_uses_current_image_width_after_resize():
    results = Resize(scale=(200, 100))(_results(50, 100, [[10, 5, 30, 25]]))
    results = RandomFlip(prob=1.0)(results)
    # boxes doubled to [20, 10, 60, 50] in a 200-wide image
    np.testing.assert_array_equal(results['gt_bboxes'], [[140, 10, 180, 50]])


def test_flip_prob_zero_never_flips():
    results = RandomFlip(prob=0.0)(_results(2, 3, [[0, 0, 1, 1]]))
    assert results['flip'] is False and results['flip_direction'] is None
    np.testing.assert_array_equal(results['gt_bboxes'], [[0, 0, 1, 1]])


def test_flip_draws_like_numpy_choice():
    # np.random.choice([d, None], p=[0.5, 0.5]) takes one uniform u and
    # flips iff u < 0.5; with two directions and p=[0.3, 0.2]:
    # u < 0.3 horizontal, u < 0.5 vertical, else no flip.
    single = RandomFlip(prob=0.5)
    multi = RandomFlip(prob=[0.3, 0.2], direction=['horizontal', 'vertical'])
    seen = set()
    for seed in range(40):
        np.random.seed(seed)
        u = np.random.random_sample()
        np.random.seed(seed)
        assert single(_results(2, 2))['flip'] == (u < 0.5)
        np.random.seed(seed)
        got = multi(_results(2, 2))['flip_direction']
        expected = 'horizontal' if u < 0.3 else (
            'vertical' if u < 0.5 else None)
        assert got == expected
        seen.add(got)
    assert seen == {'horizontal', 'vertical', None}


def test_flip_argument_errors():
    with pytest.raises(ValueError, match='prob'):
        RandomFlip()
    with pytest.raises(ValueError, match='direction'):
        RandomFlip(prob=0.5, direction='sideways')
    with pytest.raises(ValueError, match='one probability per'):
        RandomFlip(prob=[0.5, 0.6], direction=['horizontal', 'vertical'])


# ------------------------------------------------------------------- Pad
def test_pad_size_divisor_bottom_right():
    results = _results(50, 70, [[1, 2, 3, 4]], value=9)
    results = Pad(size_divisor=32)(results)
    assert results['img'].shape == (64, 96, 3)
    assert results['pad_shape'] == (64, 96)
    assert results['img_shape'] == (64, 96)
    assert (results['img'][:50, :70] == 9).all()
    assert (results['img'][50:] == 0).all() and (results['img'][:, 70:] ==
                                                 0).all()
    np.testing.assert_array_equal(results['gt_bboxes'], [[1, 2, 3, 4]])


def test_pad_value_square_and_fixed_size():
    results = Pad(size_divisor=8, pad_val=dict(img=114))(_results(5, 6))
    assert results['img'].shape == (8, 8, 3)
    assert results['img'][7, 7].tolist() == [114, 114, 114]
    assert Pad(pad_to_square=True)(_results(50, 70))['img'].shape == (70, 70,
                                                                      3)
    assert Pad(pad_to_square=True, size_divisor=32)(
        _results(50, 70))['pad_shape'] == (96, 96)
    # size is (w, h)
    assert Pad(size=(80, 60))(_results(50, 70))['pad_shape'] == (60, 80)
    with pytest.raises(ValueError, match='larger than the padded size'):
        Pad(size=(10, 10))(_results(50, 70))
    with pytest.raises(ValueError, match='exactly one'):
        Pad()
