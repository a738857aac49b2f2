"""CrossEntropyLoss: softmax, sigmoid (incl. the RPN's 1 channel), mask."""
import math

import pytest
import torch
import torch.nn.functional as F

from detkit.models.losses import CrossEntropyLoss
from detkit.registry import MODELS

EPS = 1.1920928955078125e-07


def softplus(x):
    return math.log1p(math.exp(x))


def test_softmax_closed_form_and_reductions():
    loss = MODELS.build(dict(type='CrossEntropyLoss'))
    logits = torch.tensor([[0., 0., 0.], [2., 0., 0.]])
    labels = torch.tensor([1, 0])
    per_row = [math.log(3), math.log(1 + 2 * math.exp(-2))]
    assert loss(logits, labels, reduction_override='none').tolist() == \
        pytest.approx(per_row, rel=1e-6)
    assert loss(logits, labels).item() == pytest.approx(sum(per_row) / 2,
                                                        rel=1e-6)
    w = torch.tensor([2., 0.5])
    assert loss(logits, labels, w, avg_factor=3).item() == pytest.approx(
        (2 * per_row[0] + 0.5 * per_row[1]) / (3 + EPS), rel=1e-6)
    heavy = CrossEntropyLoss(loss_weight=4.)
    assert heavy(logits, labels).item() == pytest.approx(
        2 * sum(per_row), rel=1e-6)


def test_softmax_class_weight_and_ignore_index():
    logits = torch.randn(5, 4, generator=torch.Generator().manual_seed(0))
    labels = torch.tensor([0, 3, -100, 2, 3])
    cw = [1., 2., 3., 0.5]
    loss = CrossEntropyLoss(class_weight=cw, reduction='none')
    expected = F.cross_entropy(logits, labels, weight=torch.tensor(cw),
                               reduction='none')
    torch.testing.assert_close(loss(logits, labels), expected)
    assert loss(logits, labels)[2].item() == 0
    # avg_non_ignore divides by the 4 valid labels, not 5.
    with pytest.warns(UserWarning, match='avg_non_ignore'):
        CrossEntropyLoss(ignore_index=7)
    mean_valid = CrossEntropyLoss(ignore_index=3, avg_non_ignore=True)
    labels = torch.tensor([0, 3, 1, 2, 3])
    per_row = F.cross_entropy(logits, labels, reduction='none',
                              ignore_index=3)
    torch.testing.assert_close(mean_valid(logits, labels),
                               per_row.sum() / 3)


def test_sigmoid_one_hot_expansion_and_background():
    loss = CrossEntropyLoss(use_sigmoid=True, reduction='none')
    logits = torch.tensor([[1., -1.], [0.5, 2.]])
    labels = torch.tensor([1, 2])  # 2 = background: all-zero targets
    out = loss(logits, labels)
    expected = [[softplus(1.), softplus(1.)], [softplus(0.5), softplus(2.)]]
    torch.testing.assert_close(out, torch.tensor(expected))
    # Per-row weights broadcast over channels; a -1 label is ignored.
    out = loss(logits, torch.tensor([-1, 0]), torch.tensor([1., 3.]))
    torch.testing.assert_close(
        out, torch.tensor([[0., 0.], [3 * softplus(-0.5), 3 * softplus(2.)]]))


def test_sigmoid_rpn_single_channel():
    """RPN: label 0 (object) -> target 1; label 1 (background) -> 0."""
    loss = CrossEntropyLoss(use_sigmoid=True)
    logits = torch.tensor([[0.7], [-0.2], [1.5]])
    labels = torch.tensor([0, 1, 1])
    weights = torch.tensor([1., 1., 0.])
    value = loss(logits, labels, weights, avg_factor=2)
    expected = (softplus(-0.7) + softplus(-0.2)) / (2 + EPS)
    assert value.item() == pytest.approx(expected, rel=1e-6)
    # pos_weight = class_weight.
    pos = CrossEntropyLoss(use_sigmoid=True, class_weight=[2.])
    assert pos(logits[:1], labels[:1]).item() == pytest.approx(
        2 * softplus(-0.7), rel=1e-6)


def test_sigmoid_same_shape_targets():
    loss = CrossEntropyLoss(use_sigmoid=True, reduction='sum')
    logits = torch.tensor([[0.2, -0.4]])
    target = torch.tensor([[1., 0.]])
    assert loss(logits, target).item() == pytest.approx(
        softplus(-0.2) + softplus(-0.4), rel=1e-6)


def test_mask_cross_entropy():
    loss = CrossEntropyLoss(use_mask=True)
    pred = torch.zeros(2, 3, 2, 2)
    pred[0, 2] = 2.
    target = torch.ones(2, 2, 2)
    labels = torch.tensor([2, 0])
    out = loss(pred, target, labels)
    assert out.shape == (1, )
    assert out.item() == pytest.approx(
        (softplus(-2.) + softplus(0.)) / 2, rel=1e-6)
    with pytest.raises(ValueError, match='exclusive'):
        CrossEntropyLoss(use_sigmoid=True, use_mask=True)
