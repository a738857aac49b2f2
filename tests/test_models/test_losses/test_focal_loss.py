"""FocalLoss: mmdetection reference outputs and the closed form
(docs/losses.md)."""
import math

import pytest
import torch
from conftest import load_reference

from detkit.models.losses import FocalLoss
from detkit.registry import MODELS

EPS = 1.1920928955078125e-07


def test_matches_mmdet_reference():
    ref = load_reference('focal_loss.pt')
    inputs, out = ref['inputs'], ref['outputs']
    loss = MODELS.build(eval(ref['component']))
    logits, labels = inputs['logits'], inputs['labels']
    assert inputs['num_classes'] == logits.size(1) == 80
    assert torch.equal(loss(logits, labels, reduction_override='none'),
                       out['loss_none'])
    assert torch.equal(loss(logits, labels), out['loss_mean'])
    assert torch.equal(loss(logits, labels, reduction_override='sum'),
                       out['loss_sum'])
    assert torch.equal(loss(logits, labels, avg_factor=37),
                       out['loss_avg_factor_37'])
    assert torch.equal(
        loss(logits, labels, inputs['weight'], avg_factor=37),
        out['loss_weighted_avg_factor_37'])
    x = logits.clone().requires_grad_()
    loss(x, labels, reduction_override='sum').backward()
    assert torch.equal(x.grad, out['grad_of_sum'])
    # mmcv's kernel formula: the same function up to float rounding
    # (it loses precision in log(1 - p) for large logits).
    torch.testing.assert_close(
        out['loss_none'], out['shim_sigmoid_focal_loss_none'], rtol=5e-3,
        atol=1e-6)


def closed_form(x, t, alpha=0.25, gamma=2.0):
    p = 1 / (1 + math.exp(-x))
    bce = -(t * math.log(p) + (1 - t) * math.log(1 - p))
    pt = (1 - p) * t + p * (1 - t)
    return bce * (alpha * t + (1 - alpha) * (1 - t)) * pt**gamma


def test_closed_form_scalars():
    loss = FocalLoss(reduction='none')
    # Two classes; label 0 (t = [1, 0]), label 2 = background (t = [0, 0]).
    logits = torch.tensor([[0., 2.], [-1.5, 3.]])
    out = loss(logits, torch.tensor([0, 2]))
    expected = [[closed_form(0., 1), closed_form(2., 0)],
                [closed_form(-1.5, 0), closed_form(3., 0)]]
    torch.testing.assert_close(out, torch.tensor(expected), rtol=1e-6,
                               atol=0)
    # x = 0, t = 1: 0.25 * 0.5^2 * ln 2.
    assert out[0, 0].item() == pytest.approx(0.0625 * math.log(2), rel=1e-6)
    # gamma 0, alpha 0.5: half of the plain BCE.
    plain = FocalLoss(gamma=0., alpha=0.5, reduction='none')
    assert plain(torch.tensor([[2.]]), torch.tensor([0])).item() == \
        pytest.approx(0.5 * math.log(1 + math.exp(-2)), rel=1e-6)


def test_weights_avg_factor_and_loss_weight():
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(6, 3, generator=g)
    labels = torch.tensor([0, 1, 3, 2, 3, 0])
    loss = FocalLoss()
    elem = loss(logits, labels, reduction_override='none')
    w = torch.tensor([1., 0., 2., 1., 0.5, 1.])
    torch.testing.assert_close(
        loss(logits, labels, w, avg_factor=4.),
        (elem * w[:, None]).sum() / (4. + EPS))
    # A (N, C) weight equal to the broadcast row weight gives the same.
    torch.testing.assert_close(
        loss(logits, labels, w[:, None].expand(6, 3), avg_factor=4.),
        loss(logits, labels, w, avg_factor=4.))
    torch.testing.assert_close(loss(logits, labels), elem.mean())
    heavy = FocalLoss(loss_weight=3.)
    torch.testing.assert_close(heavy(logits, labels), 3 * elem.mean())
    # One-hot targets give the same as labels.
    onehot = torch.nn.functional.one_hot(labels, 4)[:, :3]
    torch.testing.assert_close(loss(logits, onehot), elem.mean())


def test_activated_probabilities():
    logits = torch.tensor([[0.3, -2.], [1., 0.5]])
    labels = torch.tensor([1, 0])
    on_logits = FocalLoss(reduction='none')(logits, labels)
    on_probs = FocalLoss(activated=True, reduction='none')(logits.sigmoid(),
                                                          labels)
    torch.testing.assert_close(on_probs, on_logits, rtol=1e-5, atol=1e-7)


def test_errors():
    with pytest.raises(ValueError, match='sigmoid'):
        FocalLoss(use_sigmoid=False)
    with pytest.raises(ValueError, match=r'\[0, 2\]'):
        FocalLoss()(torch.zeros(2, 2), torch.tensor([0, 3]))
    with pytest.raises(ValueError, match='reduction'):
        FocalLoss()(torch.zeros(2, 2), torch.tensor([0, 1]),
                    reduction_override='avg')
