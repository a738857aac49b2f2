"""weight_reduce_loss / reduce_loss (the weighting and reduction of
docs/losses.md)."""
import pytest
import torch

from detkit.models.losses import reduce_loss, weight_reduce_loss

LOSS = torch.tensor([[1., 2.], [3., 4.]])


def test_reduce_loss():
    assert reduce_loss(LOSS, 'mean').item() == 2.5
    assert reduce_loss(LOSS, 'sum').item() == 10
    assert reduce_loss(LOSS, 'none') is LOSS
    with pytest.raises(ValueError, match="'none', 'mean' or 'sum'"):
        reduce_loss(LOSS, 'max')


def test_weight_and_avg_factor():
    w = torch.tensor([[1.], [0.5]])
    assert weight_reduce_loss(LOSS, w, 'sum').item() == 1 + 2 + 1.5 + 2
    assert weight_reduce_loss(LOSS, w, 'mean').item() == 6.5 / 4
    eps = torch.finfo(torch.float32).eps
    assert eps == pytest.approx(1.1920929e-07)
    out = weight_reduce_loss(LOSS, w, 'mean', avg_factor=2)
    assert out.item() == pytest.approx(6.5 / (2 + eps), rel=1e-7)
    # avg_factor 0 does not divide by zero.
    assert weight_reduce_loss(LOSS, None, 'mean', avg_factor=0).item() == \
        pytest.approx(10 / eps)
    # A tensor avg_factor works the same.
    torch.testing.assert_close(
        weight_reduce_loss(LOSS, None, 'mean', torch.tensor(4.)),
        torch.tensor(10 / (4 + eps)))
    assert torch.equal(
        weight_reduce_loss(LOSS, w, 'none', avg_factor=3), LOSS * w)
    with pytest.raises(ValueError, match="reduction='sum'"):
        weight_reduce_loss(LOSS, None, 'sum', avg_factor=2)
