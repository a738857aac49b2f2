"""SSD augmentations: Expand, MinIoURandomCrop, PhotoMetricDistortion.

Random draws are either scripted (monkeypatched NumPy functions, so the
expected numbers can be worked out by hand) or seeded, in which case the
geometry is read back from an image whose pixels encode their own
coordinates.
"""
import itertools

import numpy as np
import pytest

from detkit.datasets.transforms import (Expand, MinIoURandomCrop,
                                        PhotoMetricDistortion)


def _coord_image(h, w):
    """uint8 image with img[y, x] = (x, y, 77): a crop's top-left pixel
    tells where it was cut."""
    ys, xs = np.mgrid[:h, :w]
    return np.stack([xs, ys, np.full_like(xs, 77)], -1).astype(np.uint8)


def _boxes_results(img, boxes, labels=None, ignore=None):
    n = len(boxes)
    return dict(
        img=img,
        img_shape=img.shape[:2],
        gt_bboxes=np.array(boxes, np.float32).reshape(-1, 4),
        gt_bboxes_labels=np.array(
            labels if labels is not None else range(n), np.int64),
        gt_ignore_flags=np.array(
            ignore if ignore is not None else [False] * n, bool))


# ---------------------------------------------------------------- Expand
def test_expand_pastes_image_on_mean_canvas_and_shifts_boxes():
    img = np.full((10, 20, 3), 7, np.uint8)
    transform = Expand(mean=(123.675, 116.28, 103.53), to_rgb=True,
                       ratio_range=(2, 2), prob=1.0)
    np.random.seed(3)
    np.random.uniform(0, 1)  # the coin
    np.random.uniform(2, 2)  # the ratio
    left = int(np.random.uniform(0, 20))  # U(0, w * r - w)
    top = int(np.random.uniform(0, 10))
    np.random.seed(3)
    results = transform(_boxes_results(img, [[2, 3, 12, 8]]))
    out = results['img']
    assert out.shape == (20, 40, 3) and results['img_shape'] == (20, 40)
    # RGB mean reversed to BGR and truncated to uint8
    mask = np.ones((20, 40), bool)
    mask[top:top + 10, left:left + 20] = False
    assert (out[mask] == (103, 116, 123)).all()
    assert (out[top:top + 10, left:left + 20] == 7).all()
    np.testing.assert_array_equal(results['gt_bboxes'],
                                  [[2 + left, 3 + top, 12 + left, 8 + top]])
    assert results['gt_bboxes'].dtype == np.float32


def test_expand_skips_when_coin_exceeds_prob_and_keeps_float_mean():
    results = Expand(prob=0.0)(_boxes_results(
        np.zeros((4, 4, 3), np.uint8), [[0, 0, 1, 1]]))
    assert results['img'].shape == (4, 4, 3)
    np.testing.assert_array_equal(results['gt_bboxes'], [[0, 0, 1, 1]])
    img = np.zeros((4, 4, 3), np.float32)
    out = Expand(mean=(1.5, 2.5, 3.5), to_rgb=False, ratio_range=(3, 3),
                 prob=1.0)(dict(img=img))['img']
    assert out.shape == (12, 12, 3)
    assert (out == (1.5, 2.5, 3.5)).all(axis=-1).sum() == 144 - 16


# ------------------------------------------------------ MinIoURandomCrop
def _script(monkeypatch, modes, uniforms):
    modes, uniforms = iter(modes), iter(uniforms)
    monkeypatch.setattr(np.random, 'choice', lambda seq: next(modes))
    monkeypatch.setattr(np.random, 'uniform', lambda *a: next(uniforms))


def test_min_iou_crop_worked_example(monkeypatch):
    # 100x200 image; A and C have their centres (40, 40), (100, 84) inside
    # the patch (10, 15, 130, 95), B's (170, 30) is outside.
    img = _coord_image(100, 200)
    results = _boxes_results(
        img, [[20, 20, 60, 60], [150, 10, 190, 50], [70, 70, 130, 98]],
        labels=[0, 1, 2], ignore=[False, True, True])
    # mode 0 (min IoU 0); first try: 20x90 has h/w = 4.5 > 2 -> rejected
    # after two draws; second try: new_w 120, new_h 80, left 10, top 15.
    _script(monkeypatch, [0.0], [20, 90, 120, 80, 10.7, 15.2])
    results = MinIoURandomCrop()(results)
    assert results['img'].shape == (80, 120, 3)
    assert results['img'][0, 0].tolist() == [10, 15, 77]  # cut at (10, 15)
    # shifted by (-10, -15); C's y2 = 83 is clipped to the patch height 80
    np.testing.assert_array_equal(results['gt_bboxes'],
                                  [[10, 5, 50, 45], [60, 55, 120, 80]])
    np.testing.assert_array_equal(results['gt_bboxes_labels'], [0, 2])
    np.testing.assert_array_equal(results['gt_ignore_flags'], [False, True])
    assert results['img_shape'] == (80, 120)


def test_min_iou_crop_requires_iou_with_every_box(monkeypatch):
    # Boxes A, C vs patch (10, 15, 130, 95) of area 9600:
    # IoU(A) = 1600 / 9600 = 0.167, IoU(C) = 1500 / 9780 = 0.153.
    boxes = [[20, 20, 60, 60], [70, 70, 130, 98]]
    same_patch = itertools.cycle([120, 80, 10, 15])
    # mode 0.3: all 50 tries give this patch and fail; then mode 1 keeps
    # the image as it is.
    _script(monkeypatch, [0.3, 1], same_patch)
    results = MinIoURandomCrop()(_boxes_results(_coord_image(100, 200),
                                                boxes))
    assert results['img'].shape == (100, 200, 3)
    np.testing.assert_array_equal(results['gt_bboxes'], boxes)
    # mode 0.1 accepts it.
    _script(monkeypatch, [0.1], same_patch)
    results = MinIoURandomCrop()(_boxes_results(_coord_image(100, 200),
                                                boxes))
    assert results['img'].shape == (80, 120, 3)
    np.testing.assert_array_equal(results['gt_bboxes'],
                                  [[10, 5, 50, 45], [60, 55, 120, 80]])


def test_min_iou_crop_without_boxes_still_crops(monkeypatch):
    _script(monkeypatch, [0.5], [60, 40, 5, 7])
    results = MinIoURandomCrop()(_boxes_results(_coord_image(50, 100), []))
    assert results['img'].shape == (40, 60, 3)
    assert results['img'][0, 0].tolist() == [5, 7, 77]
    assert results['gt_bboxes'].shape == (0, 4)


@pytest.mark.parametrize('seed', range(8))
def test_min_iou_crop_seeded_geometry(seed):
    rng = np.random.RandomState(100 + seed)
    xy = rng.uniform(0, [150, 90], size=(6, 2))
    wh = rng.uniform(10, 60, size=(6, 2))
    boxes = np.concatenate([xy, np.minimum(xy + wh, [200, 120])],
                           1).astype(np.float32)
    labels = np.arange(6)
    ignore = np.array([0, 1, 0, 1, 0, 0], bool)
    np.random.seed(seed)
    results = MinIoURandomCrop()(
        _boxes_results(_coord_image(120, 200), boxes, labels, ignore))
    h, w = results['img'].shape[:2]
    left, top = (int(v) for v in results['img'][0, 0, :2])
    if (h, w) == (120, 200):  # mode 1: unchanged
        np.testing.assert_array_equal(results['gt_bboxes'], boxes)
        return
    patch = np.array([left, top, left + w, top + h], np.float32)
    cx, cy = (boxes[:, 0] + boxes[:, 2]) / 2, (boxes[:, 1] + boxes[:, 3]) / 2
    inside = ((cx > patch[0]) & (cy > patch[1]) & (cx < patch[2]) &
              (cy < patch[3]))
    assert inside.any()
    expected = boxes[inside] - [left, top, left, top]
    expected[:, 0::2] = expected[:, 0::2].clip(0, w)
    expected[:, 1::2] = expected[:, 1::2].clip(0, h)
    np.testing.assert_allclose(results['gt_bboxes'], expected, atol=1e-4)
    np.testing.assert_array_equal(results['gt_bboxes_labels'],
                                  labels[inside])
    np.testing.assert_array_equal(results['gt_ignore_flags'], ignore[inside])
    assert 0.5 <= h / w <= 2 and w >= 0.3 * 200 - 1 and h >= 0.3 * 120 - 1


# ------------------------------------------------- PhotoMetricDistortion
def _script_photometric(monkeypatch, flags, delta=0., alpha=1., sat=1.,
                        hue=0., perm=(0, 1, 2)):
    """flags: mode, brightness, contrast, saturation, hue, swap."""
    ints, floats = iter(flags), iter([delta, alpha, sat, hue])
    monkeypatch.setattr(np.random, 'randint', lambda n: next(ints))
    monkeypatch.setattr(np.random, 'uniform', lambda lo, hi: next(floats))
    monkeypatch.setattr(np.random, 'permutation', lambda n: np.array(perm))


def _pixel(bgr):
    return dict(img=np.array([[bgr]], np.uint8))


@pytest.mark.parametrize('flags, kwargs, src, expected', [
    # brightness +12.5, no clipping to 255 afterwards
    ([0, 1, 0, 0, 0, 0], dict(delta=12.5), (10, 20, 30), (22.5, 32.5, 42.5)),
    ([0, 1, 0, 0, 0, 0], dict(delta=32), (250, 250, 250), (282, 282, 282)),
    # contrast x1.5 before (mode 1) or after (mode 0) the HSV steps
    ([1, 1, 1, 0, 0, 0], dict(delta=2, alpha=1.5), (10, 20, 30),
     (18, 33, 48)),
    ([0, 0, 1, 0, 0, 0], dict(alpha=1.5), (10, 20, 30), (15, 30, 45)),
    # saturation: red S=1 -> 0.5 gives min = V * (1 - S) = 100
    ([0, 0, 0, 1, 0, 0], dict(sat=0.5), (0, 0, 200), (100, 100, 200)),
    # S = 0.5 -> 0.75: min = 200 * 0.25 = 50; S = 1 * 1.5 clips to 1
    ([0, 0, 0, 1, 0, 0], dict(sat=1.5), (100, 100, 200), (50, 50, 200)),
    ([0, 0, 0, 1, 0, 0], dict(sat=1.5), (0, 0, 200), (0, 0, 200)),
    # hue of red is 0: +120 -> green, -120 -> 240 (wrapped) -> blue
    ([0, 0, 0, 0, 1, 0], dict(hue=120), (0, 0, 200), (0, 200, 0)),
    ([0, 0, 0, 0, 1, 0], dict(hue=-120), (0, 0, 200), (200, 0, 0)),
    # channel swap
    ([0, 0, 0, 0, 0, 1], dict(perm=(2, 0, 1)), (10, 20, 30), (30, 10, 20)),
    # nothing drawn: only the float HSV round trip
    ([0, 0, 0, 0, 0, 0], dict(), (10, 20, 30), (10, 20, 30)),
])
def test_photometric_steps_by_hand(monkeypatch, flags, kwargs, src, expected):
    _script_photometric(monkeypatch, flags, **kwargs)
    out = PhotoMetricDistortion()(_pixel(src))['img']
    assert out.dtype == np.float32
    np.testing.assert_allclose(out[0, 0], expected, atol=1e-3)


def test_photometric_draw_count_is_fixed():
    # mode, 5 coins, 4 uniforms and a permutation, whatever the coins say
    transform = PhotoMetricDistortion()
    for seed in range(5):
        np.random.seed(seed)
        for _ in range(6):
            np.random.randint(2)
        for lo_hi in ((-32, 32), (0.5, 1.5), (0.5, 1.5), (-18, 18)):
            np.random.uniform(*lo_hi)
        np.random.permutation(3)
        expected_next = np.random.random_sample()
        np.random.seed(seed)
        transform(_pixel((10, 20, 30)))
        assert np.random.random_sample() == expected_next
