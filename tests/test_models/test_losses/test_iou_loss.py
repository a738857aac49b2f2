"""IoULoss / GIoULoss on decoded boxes: hand-computed values."""
import math

import pytest
import torch

from detkit.models.losses import GIoULoss, IoULoss
from detkit.registry import MODELS

PRED = torch.tensor([[0., 0., 10., 10.], [0., 0., 1., 1.]])
TARGET = torch.tensor([[0., 0., 10., 5.], [2., 0., 3., 1.]])  # IoU .5, 0


def test_iou_loss_modes():
    log = IoULoss(reduction='none')
    out = log(PRED, TARGET)
    assert out[0].item() == pytest.approx(math.log(2), rel=1e-6)
    # IoU 0 is clamped to eps = 1e-6.
    assert out[1].item() == pytest.approx(-math.log(1e-6), rel=1e-6)
    assert IoULoss(mode='linear', reduction='none')(
        PRED, TARGET).tolist() == pytest.approx([0.5, 1 - 1e-6])
    assert IoULoss(mode='square', reduction='none')(
        PRED, TARGET).tolist() == pytest.approx([0.75, 1.0])
    with pytest.warns(UserWarning, match='deprecated'):
        assert IoULoss(linear=True).mode == 'linear'
    with pytest.raises(ValueError, match='mode'):
        IoULoss(mode='cube')


def test_giou_loss_values():
    loss = MODELS.build(dict(type='GIoULoss', reduction='none'))
    out = loss(PRED, TARGET)
    # Row 0: GIoU = IoU = 0.5 (the enclosing box is the union).
    # Row 1: IoU 0, union 2, enclosing 3 -> GIoU -1/3, loss 4/3.
    assert out.tolist() == pytest.approx([0.5, 4 / 3], rel=1e-6)
    assert loss(PRED, PRED).tolist() == pytest.approx([0., 0.], abs=1e-6)


def test_weights_and_reduction():
    loss = GIoULoss()
    w = torch.tensor([[1., 1., 1., 1.], [0., 0., 1., 1.]])  # row means 1, .5
    value = loss(PRED, TARGET, w, avg_factor=2)
    expected = (0.5 + 0.5 * 4 / 3) / (2 + 1.1920928955078125e-07)
    assert value.item() == pytest.approx(expected, rel=1e-6)
    # No positive weight: (pred * weight).sum() == 0, with a graph.
    pred = PRED.clone().requires_grad_()
    zero = IoULoss()(pred, TARGET, torch.zeros(2))
    assert zero.item() == 0 and zero.requires_grad
    rows = IoULoss(loss_weight=2.)(PRED[:1].expand(3, 4),
                                   TARGET[:1].expand(3, 4))
    assert rows.item() == pytest.approx(2 * math.log(2), rel=1e-6)
