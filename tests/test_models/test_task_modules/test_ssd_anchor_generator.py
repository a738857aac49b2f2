"""SSDAnchorGenerator: reference SSD300 anchors, sizes and counts
(docs/anchors.md)."""
import math

import pytest
import torch
from conftest import load_reference

from detkit.models.task_modules.prior_generators import (SSDAnchorGenerator,
                                                         ssd_base_sizes)
from detkit.registry import TASK_UTILS

SSD300 = dict(
    type='SSDAnchorGenerator',
    scale_major=False,
    input_size=300,
    basesize_ratio_range=(0.15, 0.9),
    strides=[8, 16, 32, 64, 100, 300],
    ratios=[[2], [2, 3], [2, 3], [2, 3], [2], [2]])
SSD512 = dict(
    type='SSDAnchorGenerator',
    scale_major=False,
    input_size=512,
    basesize_ratio_range=(0.1, 0.9),
    strides=[8, 16, 32, 64, 128, 256, 512],
    ratios=[[2], [2, 3], [2, 3], [2, 3], [2, 3], [2], [2]])
SSDLITE = dict(
    type='SSDAnchorGenerator',
    scale_major=False,
    strides=[16, 32, 64, 107, 160, 320],
    ratios=[[2, 3]] * 6,
    min_sizes=[48, 100, 150, 202, 253, 304],
    max_sizes=[100, 150, 202, 253, 304, 320])


def test_ssd300_matches_mmdet_reference():
    ref = load_reference('anchor_generator_ssd300.pt')
    gen = TASK_UTILS.build(eval(ref['component']))
    out = ref['outputs']
    assert gen.num_base_priors == out['num_base_priors']
    assert [float(s) for s in gen.base_sizes] == out['base_sizes']
    for ours, theirs in zip(gen.base_anchors, out['base_anchors']):
        assert torch.equal(ours, theirs)
    anchors = gen.grid_priors(ref['inputs']['featmap_sizes'])
    for ours, theirs in zip(anchors, out['anchors']):
        assert torch.equal(ours, theirs)


@pytest.mark.parametrize('size, ratio_range, mins, maxs', [
    (300, (0.15, 0.9), [21, 45, 99, 153, 207, 261],
     [45, 99, 153, 207, 261, 315]),
    (512, (0.1, 0.9), [20, 51, 133, 215, 296, 378, 460],
     [51, 133, 215, 296, 378, 460, 542]),
    # VOC: the sizes of the original Caffe SSD, truncated to ints.
    (300, (0.2, 0.9), [30, 60, 111, 162, 213, 264],
     [60, 111, 162, 213, 264, 315]),
    (512, (0.15, 0.9), [35, 76, 153, 230, 307, 384, 460],
     [76, 153, 230, 307, 384, 460, 537]),
])
def test_base_sizes_per_level(size, ratio_range, mins, maxs):
    assert ssd_base_sizes(size, ratio_range, len(mins)) == (mins, maxs)


def test_ssd300_level0_closed_form():
    gen = TASK_UTILS.build(SSD300)
    base = gen.base_anchors[0]  # min 21, max 45, centre (4, 4)
    big = math.sqrt(21 * 45) / 2
    w2, h2 = 21 * math.sqrt(2) / 2, 21 / math.sqrt(2) / 2
    expected = [[4 - 10.5, 4 - 10.5, 4 + 10.5, 4 + 10.5],
                [4 - big, 4 - big, 4 + big, 4 + big],
                [4 - w2, 4 - h2, 4 + w2, 4 + h2],
                [4 - h2, 4 - w2, 4 + h2, 4 + w2]]
    torch.testing.assert_close(base, torch.tensor(expected), rtol=1e-6,
                               atol=1e-5)
    assert base[0].tolist() == [-6.5, -6.5, 14.5, 14.5]
    # Level 1 adds ratio 3 anchors: w = 45 * sqrt(3), h = 45 / sqrt(3).
    lvl1 = gen.base_anchors[1]
    assert len(lvl1) == 6
    widths = lvl1[:, 2] - lvl1[:, 0]
    heights = lvl1[:, 3] - lvl1[:, 1]
    torch.testing.assert_close(
        widths / heights,
        torch.tensor([1., 1., 2., 0.5, 3., 1 / 3]), rtol=1e-5, atol=0)
    # Anchor centres are at (j + 0.5) * stride.
    anchors = gen.single_level_grid_priors((38, 38), 0)
    centres = (anchors[:, :2] + anchors[:, 2:]) / 2
    assert centres[0].tolist() == [4., 4.]
    assert centres[4 * 38].tolist() == [4., 12.]   # next row
    assert centres[4].tolist() == [12., 4.]        # next column


@pytest.mark.parametrize('cfg, size, featmaps, total', [
    (SSD300, 300, [38, 19, 10, 5, 3, 1], 8732),
    (SSD512, 512, [64, 32, 16, 8, 4, 2, 1], 24564),
    (SSDLITE, 320, [20, 10, 5, 3, 2, 1], 3234),
])
def test_anchor_counts(cfg, size, featmaps, total):
    gen = TASK_UTILS.build(cfg)
    anchors = gen.grid_priors([(s, s) for s in featmaps])
    assert sum(len(a) for a in anchors) == total
    # pad_shape = input size: every anchor is valid.
    flags = gen.valid_flags([(s, s) for s in featmaps], (size, size))
    assert sum(int(f.sum()) for f in flags) == total


def test_ssdlite_uses_given_sizes():
    gen = TASK_UTILS.build(SSDLITE)
    assert gen.num_base_priors == [6] * 6
    first = gen.base_anchors[0]
    assert (first[0, 2] - first[0, 0]).item() == 48
    assert (first[1, 2] - first[1, 0]).item() == pytest.approx(
        math.sqrt(48 * 100), rel=1e-6)
    # The last stride is 320: centre (160, 160).
    last = gen.base_anchors[5][0]
    assert ((last[:2] + last[2:]) / 2).tolist() == [160., 160.]


def test_bad_settings_raise():
    with pytest.raises(ValueError, match='not one of the SSD settings'):
        SSDAnchorGenerator(strides=[8] * 6, ratios=[[2]] * 6,
                           input_size=320)
    with pytest.raises(ValueError, match='both min_sizes and max_sizes'):
        SSDAnchorGenerator(strides=[8], ratios=[[2]], min_sizes=[10])
    with pytest.raises(ValueError, match='ratio'):
        SSDAnchorGenerator(strides=[8, 16], ratios=[[2]],
                           min_sizes=[1, 2], max_sizes=[2, 3])
    # 40 levels: step int(75 / 38) = 1 gives 76 + 1 sizes.
    with pytest.raises(ValueError, match='yields 77 levels'):
        SSDAnchorGenerator(strides=[8] * 40, ratios=[[2]] * 40)
