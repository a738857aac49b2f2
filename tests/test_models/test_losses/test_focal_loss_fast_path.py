"""The label-target focal loss path (_FocalLossSum) gives bitwise the same
loss and gradient as the one-hot formula, on RetinaNet-sized inputs."""
import pytest
import torch
import torch.nn.functional as F

from detkit.models.losses import FocalLoss
from detkit.models.losses.focal_loss import (_FocalLossSum,
                                             py_sigmoid_focal_loss,
                                             sigmoid_focal_loss,
                                             uses_fast_path)


def one_hot_formula(logits, labels, weight, alpha=0.25, gamma=2.0):
    """The focal loss (docs/losses.md) written out with a one-hot target,
    elementwise."""
    t = F.one_hot(labels, logits.size(1) + 1)[:, :-1].type_as(logits)
    p = logits.sigmoid()
    bce = F.binary_cross_entropy_with_logits(logits, t, reduction='none')
    pt = (1 - p) * t + p * (1 - t)
    loss = bce * ((alpha * t + (1 - alpha) * (1 - t)) * pt.pow(gamma))
    return loss if weight is None else loss * weight[:, None]


@pytest.mark.parametrize('num,weighted,alpha', [(3000, True, 0.25),
                                                (3001, False, 0.25),
                                                (1024, True, 0.4)])
def test_bitwise_equal_to_the_one_hot_formula(num, weighted, alpha):
    g = torch.Generator().manual_seed(num)
    logits = torch.randn(num, 80, generator=g) * 4
    labels = torch.randint(0, 80, (num, ), generator=g)
    labels[torch.rand(num, generator=g) < 0.9] = 80  # background
    weight = (torch.rand(num, generator=g) > 0.1).float() if weighted \
        else None
    x_ref = logits.clone().requires_grad_()
    ref = one_hot_formula(x_ref, labels, weight, alpha).sum() / (
        37. + torch.finfo(torch.float32).eps)
    ref.backward()
    x = logits.clone().requires_grad_()
    out = FocalLoss(alpha=alpha)(x, labels, weight, avg_factor=37.)
    out.backward()
    assert torch.equal(out, ref)
    assert torch.equal(x.grad, x_ref.grad)
    # It is the fast path that ran: its node is in the graph.
    nodes, todo = set(), [out.grad_fn]
    while todo:
        node = todo.pop()
        if node is not None and type(node).__name__ not in nodes:
            nodes.add(type(node).__name__)
            todo += [n for n, _ in node.next_functions]
    assert _FocalLossSum.__name__ + 'Backward' in nodes


def test_closed_form_gradient_of_one_positive_and_one_negative():
    # d/dx of alpha * (1 - p)^2 * -log p at x = 0 (label 0 = positive):
    # -alpha * (1 - p)^2 * (2 p (-log p) + (1 - p)) = -0.25 * 0.25 *
    # (ln 2 + 0.5); the negative column 1 (t = 0): (1 - alpha) p^2 (2 (1 -
    # p) ln 2 + p) = 0.75 * 0.25 * (ln 2 + 0.5).
    x = torch.zeros(1, 2, requires_grad=True)
    FocalLoss(reduction='sum')(x, torch.tensor([0])).backward()
    ln2 = torch.log(torch.tensor(2.)).item()
    assert x.grad[0, 0].item() == pytest.approx(-0.0625 * (ln2 + 0.5),
                                                rel=1e-6)
    assert x.grad[0, 1].item() == pytest.approx(0.1875 * (ln2 + 0.5),
                                                rel=1e-6)


def test_bf16_logits_are_computed_in_float32():
    # AMP hands the loss bf16 logits: the loss equals the float32 loss of
    # the same (upcast) values, and the gradient comes back in bf16.
    g = torch.Generator().manual_seed(1)
    logits = (torch.randn(500, 80, generator=g) * 3).bfloat16()
    labels = torch.randint(0, 81, (500, ), generator=g)
    x16 = logits.clone().requires_grad_()
    x32 = logits.float().requires_grad_()
    out16 = FocalLoss()(x16, labels, avg_factor=20.)
    out32 = FocalLoss()(x32, labels, avg_factor=20.)
    out16.backward()
    out32.backward()
    assert out16.dtype == torch.float32 and torch.equal(out16, out32)
    assert x16.grad.dtype == torch.bfloat16
    assert torch.equal(x16.grad, x32.grad.bfloat16())


def test_the_dispatch_condition_and_the_reference_formula_agree():
    g = torch.Generator().manual_seed(5)
    x = torch.randn(6, 3, generator=g) * 3
    labels = torch.tensor([0, 1, 2, 3, 3, 3])
    one_hot = F.one_hot(labels, 4)[:, :3].float()
    assert uses_fast_path(x, labels, None, 2.0, 'mean', 4., False)
    assert uses_fast_path(x, labels, torch.ones(6), 2.0, 'sum', None, False)
    # a plain mean, another gamma, one-hot targets, probabilities or a
    # per-element weight take the formula
    assert not uses_fast_path(x, labels, None, 2.0, 'mean', None, False)
    assert not uses_fast_path(x, labels, None, 1.5, 'sum', None, False)
    assert not uses_fast_path(x, one_hot, None, 2.0, 'sum', None, False)
    assert not uses_fast_path(x.sigmoid(), labels, None, 2.0, 'sum', None,
                              True)
    assert not uses_fast_path(x, labels, torch.ones(6, 3), 2.0, 'sum', None,
                              False)
    assert not uses_fast_path(x, labels, None, 2.0, 'none', None, False)
    # where the fast path applies, it gives the formula's bits
    assert torch.equal(sigmoid_focal_loss(x, labels, avg_factor=4.),
                       py_sigmoid_focal_loss(x, labels, avg_factor=4.))
    # and the formula of one positive logit 0: alpha * 0.5^2 * ln 2
    one = py_sigmoid_focal_loss(torch.zeros(1, 1), torch.tensor([0]),
                                reduction='sum')
    assert one.item() == pytest.approx(0.25 * 0.25 * 0.6931471805599453)
