"""pairwise_overlaps (the assigner's in-place, per-coordinate IoU) equals
bbox_overlaps bitwise."""
import pytest
import torch

from detkit.models.task_modules.assigners.iou2d_calculator import \
    pairwise_overlaps
from detkit.structures import bbox_overlaps


def _boxes(*shape, g):
    xy = torch.rand(*shape, 2, generator=g) * 100
    wh = torch.rand(*shape, 2, generator=g) * 50
    wh[..., 0, :] = 0  # a degenerate box
    return torch.cat([xy, xy + wh], -1)


@pytest.mark.parametrize('mode', ['iou', 'iof'])
def test_bitwise_equal_to_bbox_overlaps(mode):
    g = torch.Generator().manual_seed(0)
    gts, priors = _boxes(2, 7, g=g), _boxes(3001, g=g)
    out = pairwise_overlaps(gts, priors, mode)
    assert out.shape == (2, 7, 3001)
    assert torch.equal(out, bbox_overlaps(gts, priors, mode))
    # Batched priors (B, N, 4) too.
    batched = _boxes(2, 50, g=g)
    assert torch.equal(pairwise_overlaps(gts, batched, mode),
                       bbox_overlaps(gts, batched, mode))


def test_hand_worked_values():
    a = torch.tensor([[0., 0., 10., 10.]])
    b = torch.tensor([[5., 5., 15., 15.], [20., 20., 30., 30.],
                      [0., 0., 10., 10.]])
    # Overlap 25: IoU 25 / 175, IoF 25 / 100; disjoint 0; identical 1.
    assert pairwise_overlaps(a, b)[0].tolist() == pytest.approx(
        [25 / 175, 0., 1.])
    assert pairwise_overlaps(a, b, 'iof')[0].tolist() == pytest.approx(
        [0.25, 0., 1.])
