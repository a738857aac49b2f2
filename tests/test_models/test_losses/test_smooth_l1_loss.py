"""SmoothL1Loss / L1Loss: mmdetection references and closed forms
(docs/losses.md)."""
import pytest
import torch
from conftest import load_reference

from detkit.models.losses import L1Loss, SmoothL1Loss
from detkit.registry import MODELS


@pytest.mark.parametrize('key, beta', [('smoothl1_beta1', 1.0),
                                       ('smoothl1_beta1_9', 1.0 / 9.0),
                                       ('l1', None)])
def test_matches_mmdet_reference(key, beta):
    ref = load_reference('smooth_l1_loss.pt')
    inputs, out = ref['inputs'], ref['outputs']
    loss = L1Loss() if beta is None else SmoothL1Loss(beta=beta)
    pred, target, weight = inputs['pred'], inputs['target'], inputs['weight']
    assert torch.equal(loss(pred, target, reduction_override='none'),
                       out[f'{key}_none'])
    assert torch.equal(loss(pred, target), out[f'{key}_mean'])
    assert torch.equal(loss(pred, target, weight, avg_factor=20),
                       out[f'{key}_weighted_avg_factor_20'])


def test_closed_forms():
    pred = torch.tensor([0.5, 2.0, -0.1, 0.0])
    target = torch.zeros(4)
    smooth = SmoothL1Loss(beta=1.0, reduction='none')
    # 0.5 d^2 / beta below beta, d - beta / 2 above.
    assert smooth(pred, target).tolist() == pytest.approx(
        [0.125, 1.5, 0.005, 0.0])
    narrow = SmoothL1Loss(beta=0.2, reduction='none')
    assert narrow(pred, target).tolist() == pytest.approx(
        [0.4, 1.9, 0.025, 0.0])
    assert L1Loss(reduction='none')(pred, target).tolist() == pytest.approx(
        [0.5, 2.0, 0.1, 0.0])
    built = MODELS.build(dict(type='L1Loss', loss_weight=2.0))
    assert built(pred, target).item() == pytest.approx(2 * 2.6 / 4)
    assert built(pred, target, reduction_override='sum').item() == \
        pytest.approx(2 * 2.6)


@pytest.mark.parametrize('loss', [SmoothL1Loss(), L1Loss()])
def test_no_positive_weight_and_empty_target(loss):
    pred = torch.randn(3, 4, requires_grad=True)
    zero = loss(pred, torch.randn(3, 4), torch.zeros(3, 4), avg_factor=0)
    assert zero.item() == 0 and zero.requires_grad
    zero.backward()
    assert torch.equal(pred.grad, torch.zeros(3, 4))
    # A per-row weight (N,) of zeros broadcasts over the 4 columns.
    assert loss(pred, torch.randn(3, 4), torch.zeros(3)).item() == 0
    empty = torch.zeros(0, 4, requires_grad=True)
    out = loss(empty, torch.zeros(0, 4))
    assert out.item() == 0 and out.requires_grad


def test_mismatched_shapes_raise():
    with pytest.raises(ValueError, match='same shape'):
        SmoothL1Loss()(torch.zeros(2, 4), torch.zeros(3, 4))
    with pytest.raises(ValueError, match='beta'):
        SmoothL1Loss(beta=0)
