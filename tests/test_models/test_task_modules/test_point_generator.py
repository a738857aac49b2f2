"""MlvlPointGenerator: point coordinates, strides, valid flags and sparse
points by closed forms; the anchor generators share its interface."""
import math

import pytest
import torch

from detkit.models.task_modules.prior_generators import (AnchorGenerator,
                                                         MlvlPointGenerator,
                                                         SSDAnchorGenerator)
from detkit.registry import TASK_UTILS

FCOS_STRIDES = [8, 16, 32, 64, 128]


def test_registered_with_mmdet_defaults():
    gen = TASK_UTILS.build(dict(type='MlvlPointGenerator',
                                strides=FCOS_STRIDES))
    assert gen.offset == 0.5
    assert gen.strides == [(s, s) for s in FCOS_STRIDES]
    assert gen.num_levels == 5
    assert gen.num_base_priors == [1, 1, 1, 1, 1]


def test_points_by_hand():
    gen = MlvlPointGenerator([8, 16])
    p0, p1 = gen.grid_priors([(2, 3), (1, 2)])
    # (j + 0.5) * 8 for x, (i + 0.5) * 8 for y, x fastest.
    assert p0.tolist() == [[4., 4.], [12., 4.], [20., 4.],
                           [4., 12.], [12., 12.], [20., 12.]]
    assert p1.tolist() == [[8., 8.], [24., 8.]]
    assert p0.dtype == torch.float32
    q0, q1 = gen.grid_priors([(2, 3), (1, 2)], with_stride=True)
    assert q0.tolist() == [r + [8., 8.] for r in p0.tolist()]
    assert q1.tolist() == [[8., 8., 16., 16.], [24., 8., 16., 16.]]


def test_offset_zero_and_rectangular_stride():
    gen = MlvlPointGenerator([(8, 4)], offset=0.)
    (p, ) = gen.grid_priors([(2, 2)], with_stride=True)
    assert gen.strides == [(8, 4)]
    # stride_w = 8 on x, stride_h = 4 on y.
    assert p.tolist() == [[0., 0., 8., 4.], [8., 0., 8., 4.],
                          [0., 4., 8., 4.], [8., 4., 8., 4.]]


@pytest.mark.parametrize('offset', [0.5, 0., 0.25])
def test_closed_form_every_level(offset):
    gen = MlvlPointGenerator(FCOS_STRIDES, offset=offset)
    h, w = 333, 250
    sizes = [(math.ceil(h / s), math.ceil(w / s)) for s in FCOS_STRIDES]
    points = gen.grid_priors(sizes)
    for (fh, fw), s, p in zip(sizes, FCOS_STRIDES, points):
        assert p.shape == (fh * fw, 2)
        for idx in (0, 1, fw - 1, fw, fh * fw - 1):
            i, j = divmod(idx, fw)
            assert p[idx].tolist() == [(j + offset) * s, (i + offset) * s]


def test_half_precision_rounds_after_the_float32_product():
    """Coordinates are computed in float32 and cast once: for x = 2999.5 *
    8 that differs from computing in fp16 (2999.5 is not an fp16 value)."""
    gen = MlvlPointGenerator([8])
    (p, ) = gen.grid_priors([(1, 3000)], dtype=torch.float16)
    expected = ((torch.arange(3000) + 0.5) * 8).half()
    in_half = (torch.arange(3000).half() + 0.5) * 8
    assert p.dtype == torch.float16
    assert torch.equal(p[:, 0], expected)
    assert not torch.equal(expected, in_half)  # the order matters here
    assert (p[:, 1] == 4).all()


def test_valid_flags_by_hand():
    gen = MlvlPointGenerator([8, 16])
    # pad (20, 30): stride 8 -> ceil(20/8) = 3 rows, ceil(30/8) = 4 cols of
    # a 4x5 map; stride 16 -> 2 rows, 2 cols of a 2x3 map.
    f0, f1 = gen.valid_flags([(4, 5), (2, 3)], (20, 30))
    expected0 = torch.zeros(4, 5, dtype=torch.bool)
    expected0[:3, :4] = True
    expected1 = torch.tensor([[1, 1, 0], [1, 1, 0]], dtype=torch.bool)
    assert f0.dtype == torch.bool
    assert torch.equal(f0, expected0.flatten())
    assert torch.equal(f1, expected1.flatten())
    # A pad shape larger than the map is capped at the map.
    (f, ) = MlvlPointGenerator([8]).valid_flags([(2, 2)], (100, 100, 3))
    assert f.tolist() == [True] * 4
    assert MlvlPointGenerator.single_level_valid_flags(
        (2, 3), (1, 2)).tolist() == [True, True, False, False, False, False]
    with pytest.raises(ValueError, match='exceeds the feature map'):
        MlvlPointGenerator.single_level_valid_flags((2, 3), (3, 3))


def test_sparse_priors_equal_grid_rows():
    gen = MlvlPointGenerator(FCOS_STRIDES)
    sizes = [(13, 17), (7, 9), (4, 5), (2, 3), (1, 2)]
    grids = gen.grid_priors(sizes)
    for level, (size, grid) in enumerate(zip(sizes, grids)):
        idxs = torch.randperm(size[0] * size[1])[:7]
        sparse = gen.sparse_priors(idxs, size, level)
        assert sparse.dtype == torch.float32
        assert torch.equal(sparse, grid[idxs])
    one = gen.sparse_priors(torch.tensor([18]), (13, 17), 0)
    assert one.tolist() == [[(1 + 0.5) * 8, (1 + 0.5) * 8]]  # i=1, j=1


def test_cache_and_errors():
    gen = MlvlPointGenerator([8, 16])
    a = gen.grid_priors([(3, 4), (2, 2)])
    b = gen.grid_priors([(3, 4), (2, 2)])
    assert all(x is y for x, y in zip(a, b))
    c = gen.grid_priors([(3, 4), (2, 2)], with_stride=True)
    assert c[0].shape == (12, 4)
    d = gen.grid_priors([(3, 4), (2, 2)], dtype=torch.float64)
    assert d[0].dtype == torch.float64 and torch.equal(d[0].float(), a[0])
    with pytest.raises(ValueError, match='2 point levels'):
        gen.grid_priors([(3, 4)])
    with pytest.raises(ValueError, match='2 point levels'):
        gen.valid_flags([(3, 4)], (24, 32))


def test_prior_generators_share_the_interface():
    """Dense heads call the same names on every prior generator."""
    gens = [
        MlvlPointGenerator(FCOS_STRIDES),
        AnchorGenerator(strides=FCOS_STRIDES, ratios=[1.0],
                        octave_base_scale=8, scales_per_octave=1),
        SSDAnchorGenerator(strides=[8, 16, 32, 64, 100, 300],
                           ratios=[[2], [2, 3], [2, 3], [2, 3], [2], [2]],
                           basesize_ratio_range=(0.15, 0.9)),
    ]
    for gen, per_loc in zip(gens, [1, 1, None]):
        assert isinstance(gen.num_levels, int)
        assert isinstance(gen.num_base_priors, list)
        assert len(gen.num_base_priors) == gen.num_levels
        assert all(isinstance(s, tuple) and len(s) == 2 for s in gen.strides)
        if per_loc is not None:
            assert gen.num_base_priors == [per_loc] * gen.num_levels
        sizes = [(3, 2)] * gen.num_levels
        priors = gen.grid_priors(sizes, dtype=torch.float32, device='cpu')
        flags = gen.valid_flags(sizes, (16, 8), device='cpu')
        for p, f, n in zip(priors, flags, gen.num_base_priors):
            assert len(p) == len(f) == 6 * n
    # ATSS's anchors (octave_base_scale 8, one per location) are centred
    # on the grid corner (j * s, i * s), FCOS's points on the cell centre.
    anchors = gens[1].grid_priors([(2, 2)] * 5)[0]
    assert anchors[3].tolist() == [8 - 32., 8 - 32., 8 + 32., 8 + 32.]
