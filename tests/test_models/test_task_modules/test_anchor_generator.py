"""AnchorGenerator: mmdetection reference anchors and closed forms
(docs/anchors.md)."""
import math

import pytest
import torch
from conftest import load_reference

from detkit.models.task_modules.prior_generators import AnchorGenerator
from detkit.registry import TASK_UTILS

RETINA = dict(
    type='AnchorGenerator',
    octave_base_scale=4,
    scales_per_octave=3,
    ratios=[0.5, 1.0, 2.0],
    strides=[8, 16, 32, 64, 128])


def test_retinanet_matches_mmdet_reference():
    ref = load_reference('anchor_generator_retinanet.pt')
    cfg = eval(ref['component'])  # a plain dict literal
    gen = TASK_UTILS.build(cfg)
    out, inputs = ref['outputs'], ref['inputs']
    assert gen.num_base_priors == out['num_base_priors']
    for ours, theirs in zip(gen.base_anchors, out['base_anchors']):
        assert torch.equal(ours, theirs)
    anchors = gen.grid_priors(inputs['featmap_sizes'])
    for ours, theirs in zip(anchors, out['anchors']):
        assert ours.dtype == torch.float32
        assert torch.equal(ours, theirs)
    flags = gen.valid_flags(inputs['featmap_sizes'], inputs['valid_hw'])
    for ours, theirs in zip(flags, out['valid_flags']):
        assert ours.dtype == torch.bool
        assert torch.equal(ours, theirs)


def test_retinanet_320_has_19206_anchors():
    gen = TASK_UTILS.build(RETINA)
    sizes = [(math.ceil(320 / s), math.ceil(320 / s)) for s in
             (8, 16, 32, 64, 128)]
    assert sizes == [(40, 40), (20, 20), (10, 10), (5, 5), (3, 3)]
    anchors = gen.grid_priors(sizes)
    assert [len(a) for a in anchors] == [14400, 3600, 900, 225, 81]
    assert sum(len(a) for a in anchors) == 19206


def test_retinanet_base_anchor_closed_forms():
    gen = AnchorGenerator(**{k: v for k, v in RETINA.items() if k != 'type'})
    scales = [4 * 2**(i / 3) for i in range(3)]
    assert gen.scales.tolist() == pytest.approx(scales, rel=1e-7)
    assert scales == pytest.approx([4, 5.0396842, 6.3496042], rel=1e-7)
    base = gen.base_anchors[0]
    # ratio 1 (second ratio), scale 4: a 32x32 box centred on (0, 0).
    assert base[3].tolist() == [-16., -16., 16., 16.]
    # ratio 0.5 = h / w, scale 4: w = 8 * sqrt(2) * 4, h = 8 / sqrt(2) * 4.
    half_w, half_h = 16 * math.sqrt(2), 8 * math.sqrt(2)
    assert base[0].tolist() == pytest.approx(
        [-half_w, -half_h, half_w, half_h], rel=1e-6)
    # ratio 2 is the transpose of ratio 0.5.
    assert torch.equal(base[6], base[0][[1, 0, 3, 2]])
    # Every level scales level 0 by stride / 8.
    for level, stride in enumerate((8, 16, 32, 64, 128)):
        torch.testing.assert_close(gen.base_anchors[level],
                                   base * (stride / 8), rtol=1e-6, atol=0)


def test_rpn_base_anchors_are_8_strides():
    gen = AnchorGenerator(
        strides=[4, 8, 16, 32, 64], ratios=[0.5, 1.0, 2.0], scales=[8])
    assert gen.num_base_priors == [3] * 5
    for level, stride in enumerate((4, 8, 16, 32, 64)):
        half = 4 * stride
        assert gen.base_anchors[level][1].tolist() == [-half, -half, half,
                                                       half]


def test_grid_order_is_y_then_x_then_anchor():
    gen = AnchorGenerator(strides=[4], ratios=[1.0, 4.0], scales=[1])
    # base anchors: 4x4 and (w=2, h=8), both centred on (0, 0).
    assert gen.base_anchors[0].tolist() == [[-2, -2, 2, 2], [-1, -4, 1, 4]]
    anchors = gen.grid_priors([(2, 3)])[0]
    assert anchors.shape == (2 * 3 * 2, 4)
    for i in range(2):
        for j in range(3):
            for a in range(2):
                k = (i * 3 + j) * 2 + a
                shift = torch.tensor([4. * j, 4. * i, 4. * j, 4. * i])
                assert torch.equal(anchors[k],
                                   gen.base_anchors[0][a] + shift)


def test_non_square_stride_and_center_offset():
    gen = AnchorGenerator(strides=[(8, 4)], ratios=[1.0], scales=[1],
                          center_offset=0.5)
    assert gen.strides == [(8, 4)]
    # base size = the smaller stride (4), centred at 0.5 * 4 = 2.
    assert gen.base_anchors[0].tolist() == [[0., 0., 4., 4.]]
    anchors = gen.single_level_grid_priors((2, 2), 0)
    assert anchors.tolist() == [[0, 0, 4, 4], [8, 0, 12, 4], [0, 4, 4, 8],
                                [8, 4, 12, 8]]


def test_explicit_centers_and_base_sizes():
    gen = AnchorGenerator(strides=[16], ratios=[1.0], scales=[2],
                          base_sizes=[10], centers=[(3., 5.)])
    assert gen.base_anchors[0].tolist() == [[-7., -5., 13., 15.]]


def test_scale_major_false_puts_scales_outer():
    kw = dict(strides=[8], ratios=[0.5, 2.0], scales=[1, 2])
    major = AnchorGenerator(scale_major=True, **kw).base_anchors[0]
    minor = AnchorGenerator(scale_major=False, **kw).base_anchors[0]
    # (ratio, scale) order: major (r0,s0)(r0,s1)(r1,s0)(r1,s1);
    # minor (r0,s0)(r1,s0)(r0,s1)(r1,s1).
    assert torch.equal(minor, major[[0, 2, 1, 3]])


def test_valid_flags_closed_form():
    gen = AnchorGenerator(strides=[8, 16], ratios=[0.5, 1.0], scales=[1])
    flags = gen.valid_flags([(4, 5), (2, 3)], pad_shape=(20, 30))
    # level 0: valid rows ceil(20/8) = 3 of 4, cols ceil(30/8) = 4 of 5.
    grid = flags[0].view(4, 5, 2)
    assert grid[..., 0].equal(grid[..., 1])
    expected = torch.zeros(4, 5, dtype=torch.bool)
    expected[:3, :4] = True
    assert torch.equal(grid[..., 0], expected)
    # level 1: ceil(20/16) = 2 of 2 rows, ceil(30/16) = 2 of 3 cols.
    assert flags[1].view(2, 3, 2)[..., 0].tolist() == [[True, True, False],
                                                       [True, True, False]]
    # A pad shape larger than the map keeps everything.
    assert all(f.all() for f in gen.valid_flags([(4, 5), (2, 3)],
                                                (1000, 1000)))


def test_grid_priors_is_cached_per_size_dtype_device():
    gen = AnchorGenerator(**{k: v for k, v in RETINA.items() if k != 'type'})
    sizes = [(10, 12), (5, 6), (3, 3), (2, 2), (1, 1)]
    first = gen.grid_priors(sizes)
    second = gen.grid_priors([torch.Size(s) for s in sizes])
    assert all(a is b for a, b in zip(first, second))
    double = gen.grid_priors(sizes, dtype=torch.float64)
    assert double[0].dtype == torch.float64
    assert double[0] is not first[0]
    torch.testing.assert_close(double[0].float(), first[0])
    other = gen.grid_priors([(11, 12), (6, 6), (3, 3), (2, 2), (1, 1)])
    assert len(other[0]) == 11 * 12 * 9


def test_cache_is_bounded():
    gen = AnchorGenerator(strides=[8], ratios=[1.0], scales=[1])
    for h in range(1, gen.cache_size + 10):
        gen.grid_priors([(h, 1)])
    assert len(gen._grid_cache) == gen.cache_size


def test_constructor_errors_are_explicit():
    with pytest.raises(ValueError, match='exactly one'):
        AnchorGenerator(strides=[8], ratios=[1.0], scales=[1],
                        octave_base_scale=4, scales_per_octave=3)
    with pytest.raises(ValueError, match='exactly one'):
        AnchorGenerator(strides=[8], ratios=[1.0])
    with pytest.raises(ValueError, match='base_sizes'):
        AnchorGenerator(strides=[8, 16], ratios=[1.0], scales=[1],
                        base_sizes=[8])
    with pytest.raises(ValueError, match='use_box_type'):
        AnchorGenerator(strides=[8], ratios=[1.0], scales=[1],
                        use_box_type=True)
    gen = AnchorGenerator(strides=[8, 16], ratios=[1.0], scales=[1])
    with pytest.raises(ValueError, match='2 anchor levels'):
        gen.grid_priors([(4, 4)])
