"""DistancePointBBoxCoder: distances by hand, round trip, max_dis clamp,
clipping to one or per-image shapes."""
import numpy as np
import pytest
import torch

from detkit.models.task_modules.coders import DistancePointBBoxCoder
from detkit.registry import TASK_UTILS


def test_registered_with_mmdet_defaults():
    coder = TASK_UTILS.build(dict(type='DistancePointBBoxCoder'))
    assert coder.clip_border is True
    assert coder.encode_size == 4
    with pytest.raises(ValueError, match='use_box_type'):
        DistancePointBBoxCoder(use_box_type=True)


def test_encode_decode_by_hand():
    coder = DistancePointBBoxCoder()
    points = torch.tensor([[10., 20.], [0., 0.]])
    boxes = torch.tensor([[4., 5., 30., 26.], [2., 3., 12., 7.]])
    dist = coder.encode(points, boxes)
    # (x - x1, y - y1, x2 - x, y2 - y); the second point is outside its box.
    assert dist.tolist() == [[6., 15., 20., 6.], [-2., -3., 12., 7.]]
    assert coder.decode(points, dist).tolist() == boxes.tolist()


def test_round_trip_random():
    g = torch.Generator().manual_seed(0)
    coder = DistancePointBBoxCoder()
    xy = torch.rand(500, 2, generator=g) * 800
    wh = torch.rand(500, 2, generator=g) * 300 + 1
    boxes = torch.cat([xy, xy + wh], 1)
    points = xy + torch.rand(500, 2, generator=g) * wh
    back = coder.decode(points, coder.encode(points, boxes))
    torch.testing.assert_close(back, boxes, rtol=0, atol=1e-4)
    # On FCOS's grid (half-integer points, integer boxes) it is exact.
    grid = (torch.randint(0, 100, (500, 2), generator=g) + 0.5) * 8
    ints = torch.randint(0, 800, (500, 4), generator=g).float()
    assert torch.equal(coder.decode(grid, coder.encode(grid, ints)), ints)


def test_encode_max_dis_clamps_to_last_bin():
    coder = DistancePointBBoxCoder()
    points = torch.tensor([[10., 10.]])
    boxes = torch.tensor([[12., -50., 30., 15.]])  # l = -2, t = 60
    dist = coder.encode(points, boxes, max_dis=16, eps=0.1)
    # l = -2 -> 0; t = 60 and r = 20 -> 16 - 0.1; b = 5 stays.
    last = torch.tensor(16 - 0.1).item()  # float32 rounding of 15.9
    assert dist.tolist() == [[0., last, last, 5.]]
    assert coder.encode(points, boxes).tolist() == [[-2., 60., 20., 5.]]


def test_decode_clips_to_one_shape():
    coder = DistancePointBBoxCoder()
    points = torch.tensor([[5., 5.], [95., 45.]])
    dist = torch.tensor([[10., 10., 10., 10.], [10., 10., 10., 10.]])
    # max_shape = (h, w) = (50, 100): x in [0, 100], y in [0, 50].
    out = coder.decode(points, dist, max_shape=(50, 100))
    assert out.tolist() == [[0., 0., 15., 15.], [85., 35., 100., 50.]]
    assert coder.decode(points, dist, max_shape=(50, 100, 3)).tolist() == \
        out.tolist()
    unclipped = DistancePointBBoxCoder(clip_border=False).decode(
        points, dist, max_shape=(50, 100))
    assert unclipped.tolist() == [[-5., -5., 15., 15.], [85., 35., 105., 55.]]


@pytest.mark.parametrize('kind', ['list', 'tensor', 'tensor3', 'ndarray'])
def test_batched_decode_per_image_shapes(kind):
    g = torch.Generator().manual_seed(1)
    coder = DistancePointBBoxCoder()
    points = torch.rand(40, 2, generator=g) * 120
    dist = torch.rand(3, 40, 4, generator=g) * 60
    shapes = [(50, 100), (120, 80), (30, 30)]
    max_shape = {
        'list': shapes,
        'tensor': torch.tensor(shapes),
        'tensor3': torch.tensor([s + (3, ) for s in shapes]),
        'ndarray': np.array(shapes),
    }[kind]
    out = coder.decode(points, dist, max_shape=max_shape)
    assert out.shape == (3, 40, 4)
    for b, (h, w) in enumerate(shapes):
        single = coder.decode(points, dist[b], max_shape=(h, w))
        assert torch.equal(out[b], single)
        assert out[b, :, 0::2].max() <= w and out[b, :, 1::2].max() <= h
    # (B, N, 2) points give the same as broadcast (N, 2) points.
    same = coder.decode(points.expand(3, -1, -1), dist, max_shape=max_shape)
    assert torch.equal(same, out)
    # one shape for the whole batch
    out1 = coder.decode(points, dist, max_shape=(50, 100))
    assert torch.equal(out1[1], coder.decode(points, dist[1], (50, 100)))


def test_gradient_flows_through_clipping():
    coder = DistancePointBBoxCoder()
    dist = torch.tensor([[[10., 1., 1., 1.], [1., 1., 1., 1.]]],
                        requires_grad=True)
    points = torch.tensor([[5., 5.], [20., 20.]])
    out = coder.decode(points, dist, max_shape=[(50, 50)])
    out.sum().backward()
    # x1 = 5 - 10 is clipped to 0: no gradient to that distance.
    assert dist.grad.tolist() == [[[0., -1., 1., 1.], [-1., -1., 1., 1.]]]


def test_bad_input_errors():
    coder = DistancePointBBoxCoder()
    with pytest.raises(ValueError, match=r'points must be \(\.\.\., 2\)'):
        coder.decode(torch.zeros(4, 4), torch.zeros(4, 4))
    with pytest.raises(ValueError, match='do not broadcast'):
        coder.encode(torch.zeros(4, 2), torch.zeros(5, 4))
    with pytest.raises(ValueError, match='2 per-image max_shapes'):
        coder.decode(torch.zeros(4, 2), torch.zeros(3, 4, 4),
                     max_shape=[(10, 10), (10, 10)])
