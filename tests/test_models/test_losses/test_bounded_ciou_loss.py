"""BoundedIoULoss and CIoULoss: hand-worked pairs, identical boxes, weights
and reductions like the other IoU losses."""
import math

import pytest
import torch

from detkit.models.losses import BoundedIoULoss, CIoULoss
from detkit.registry import MODELS

EPS32 = 1.1920928955078125e-07  # the avg_factor epsilon


def _smooth(x, beta=0.2):
    return 0.5 * x * x / beta if x < beta else x - 0.5 * beta


def test_bounded_iou_of_a_shifted_box_by_hand():
    # pred 10 x 10 at the origin, target the same box moved right by 2:
    # dx = 2, dy = 0, equal sizes.
    # float64: 1 - 10 / 10.001 loses digits in float32
    pred = torch.tensor([[0., 0., 10., 10.]], dtype=torch.float64)
    target = torch.tensor([[2., 0., 12., 10.]], dtype=torch.float64)
    terms = BoundedIoULoss(reduction='none')(pred, target)
    eps = 1e-3
    l_x = 1 - (10 - 4) / (10 + 4 + eps)  # 0.5714... >= beta: linear part
    l_y = 1 - 10 / (10 + eps)  # 1e-4: quadratic part
    l_w = 1 - 10 / (10 + eps)
    expected = [_smooth(l_x), _smooth(l_y), _smooth(l_w), _smooth(l_w)]
    assert terms.shape == (1, 4)
    assert terms[0].tolist() == pytest.approx(expected, rel=1e-5)
    assert terms[0, 0].item() == pytest.approx(0.4714592, rel=1e-6)
    # mean over the 4 terms, times loss_weight
    loss = MODELS.build(dict(type='BoundedIoULoss', loss_weight=10.0))
    assert loss(pred, target).item() == pytest.approx(
        10 * sum(expected) / 4, rel=1e-5)


def test_bounded_iou_far_shift_and_size_terms():
    # |dx| >= w_t / 2 clamps the x bound at 0 (term 1); a prediction twice
    # as tall gives l_h = 1 - min(4 / 8, 8 / 4) = 0.5 (up to eps).
    pred = torch.tensor([[20., 0., 30., 8.]], dtype=torch.float64)
    target = torch.tensor([[0., 0., 10., 4.]], dtype=torch.float64)
    terms = BoundedIoULoss(reduction='none')(pred, target)[0]
    eps = 1e-3
    # dy = 2 - 4 = -2: (4 - 4) / (4 + 4 + eps) = 0 -> l_y = 1
    assert terms.tolist() == pytest.approx([
        1 - 0.1, 1 - 0.1,
        _smooth(1 - 10 / (10 + eps)),
        _smooth(1 - 4 / (8 + eps))
    ], rel=1e-5)


def test_bounded_iou_identical_boxes_is_zero_up_to_eps():
    boxes = torch.tensor([[0., 0., 10., 20.], [5., 5., 105., 55.]])
    terms = BoundedIoULoss(reduction='none')(boxes, boxes)
    # each term is about eps / size, squared / (2 beta): < 1e-7
    assert terms.max().item() < 1e-7
    assert terms[0, 0].item() == pytest.approx(
        _smooth(1 - 10 / (10 + 1e-3)), rel=1e-3)


def test_bounded_iou_weights_reductions_and_gradient():
    pred = torch.tensor([[0., 0., 10., 10.], [1., 1., 5., 9.]],
                        requires_grad=True)
    target = torch.tensor([[2., 0., 12., 10.], [0., 0., 4., 8.]])
    terms = BoundedIoULoss(reduction='none')(pred, target)
    # (N, 4) weights act term by term (the RoI head's box weights)
    w = torch.tensor([[1., 1., 1., 1.], [0., 0., 1., 1.]])
    value = BoundedIoULoss()(pred, target, w, avg_factor=2)
    expected = (terms * w).sum() / (2 + EPS32)
    assert value.item() == pytest.approx(expected.item(), rel=1e-6)
    # (N,) weights act box by box
    per_box = BoundedIoULoss(reduction='sum')(pred, target,
                                              torch.tensor([2., 0.]))
    assert per_box.item() == pytest.approx(2 * terms[0].sum().item(),
                                           rel=1e-6)
    # no positive weight: 0 with a graph, before any computation
    zero = BoundedIoULoss()(pred, target, torch.zeros(2, 4))
    assert zero.item() == 0 and zero.requires_grad
    # the target gets no gradient; the prediction does
    target.requires_grad_()
    BoundedIoULoss()(pred, target).backward()
    assert target.grad is None and torch.isfinite(pred.grad).all()
    assert pred.grad.abs().sum() > 0
    with pytest.raises(ValueError, match='beta must be positive'):
        BoundedIoULoss(beta=0)


def _ciou_parts(p, t, eps=1e-6):
    """``(IoU, rho^2 / c^2, v)`` of two boxes with Python floats."""
    iw = max(0., min(p[2], t[2]) - max(p[0], t[0]))
    ih = max(0., min(p[3], t[3]) - max(p[1], t[1]))
    inter = iw * ih
    wp, hp = p[2] - p[0], p[3] - p[1]
    wt, ht = t[2] - t[0], t[3] - t[1]
    iou = inter / (wp * hp + wt * ht - inter + eps)
    cw = max(p[2], t[2]) - min(p[0], t[0])
    ch = max(p[3], t[3]) - min(p[1], t[1])
    rho2 = (((t[0] + t[2]) - (p[0] + p[2]))**2 +
            ((t[1] + t[3]) - (p[1] + p[3]))**2) / 4
    v = 4 / math.pi**2 * (math.atan(wt / (ht + eps)) -
                          math.atan(wp / (hp + eps)))**2
    return iou, rho2 / (cw**2 + ch**2 + eps), v


def _alpha(iou, v):
    return v / (1 - iou + v) if iou > 0.5 else 0.


def _ciou_by_hand(p, t, eps=1e-6):
    """The CIoU formula on two boxes with Python floats."""
    iou, dist, v = _ciou_parts(p, t, eps)
    return iou - dist - _alpha(iou, v) * v


def test_ciou_hand_worked_pairs():
    pairs = [
        # IoU 1/3, same aspect (v = 0), centres 1 apart, enclosing 3 x 2:
        # CIoU = 1/3 - 1/13 = 0.25641, loss 0.74359
        ([0., 0., 2., 2.], [1., 0., 3., 2.], 1 - (1 / 3 - 1 / 13)),
        # IoU 2/3 > 0.5 with different aspects: rho^2 = 0.25, c^2 = 25,
        # v = 4/pi^2 (atan(4/3) - atan(2))^2 = 0.0131099,
        # alpha = v / (1/3 + v) = 0.0378425 -> loss 0.3438294
        ([0., 0., 4., 2.], [0., 0., 4., 3.], 0.3438294),
        # IoU 1/2 (not > 0.5): alpha = 0 although the aspects differ
        ([0., 0., 4., 2.], [0., 0., 4., 4.], None),
    ]
    pred = torch.tensor([p for p, _, _ in pairs])
    target = torch.tensor([t for _, t, _ in pairs])
    out = CIoULoss(reduction='none')(pred, target)
    for i, (p, t, by_hand) in enumerate(pairs):
        expected = 1 - _ciou_by_hand(p, t)
        assert out[i].item() == pytest.approx(expected, rel=1e-5)
        if by_hand is not None:
            assert out[i].item() == pytest.approx(by_hand, rel=1e-5)
    # the third pair: no aspect penalty, only IoU and distance
    # (centres (2, 1) and (2, 2), enclosing 4 x 4)
    assert out[2].item() == pytest.approx(1 - (0.5 - 1 / 32), rel=1e-5)


def test_ciou_identical_and_far_boxes():
    # 200 + eps rounds to 200 in float32: IoU is exactly 1 and v = 0, where
    # v / (1 - IoU + v) would be 0 / 0 (NaN); the aspect term is 0 there.
    boxes = torch.tensor([[0., 0., 10., 20.], [3., 4., 5., 9.]])
    assert CIoULoss(reduction='none')(boxes, boxes).tolist() == \
        pytest.approx([0., 0.], abs=1e-6)
    # disjoint and far: IoU 0, rho^2 / c^2 -> 1 for far boxes, so the loss
    # approaches 2 (CIoU clamped at -1)
    far = CIoULoss(reduction='none')(torch.tensor([[0., 0., 1., 1.]]),
                                     torch.tensor([[1000., 0., 1001., 1.]]))
    assert far.item() == pytest.approx(
        1 - _ciou_by_hand([0., 0., 1., 1.], [1000., 0., 1001., 1.]), rel=1e-6)
    assert 1.99 < far.item() <= 2


def test_ciou_alpha_is_constant_for_the_gradient():
    """The gradient is that of ``1 - (IoU - rho^2/c^2 - alpha0 * v)`` with
    ``alpha0`` frozen at the current boxes (central differences)."""
    base = [0., 0., 4., 2.]
    t = [0., 0., 4., 3.]
    p = torch.tensor([base], dtype=torch.float64, requires_grad=True)
    CIoULoss()(p, torch.tensor([t], dtype=torch.float64)).backward()
    iou0, _, v0 = _ciou_parts(base, t)
    alpha0 = _alpha(iou0, v0)
    assert alpha0 > 0.03  # IoU 2/3 > 0.5: the term is active

    def frozen(q):
        iou, dist, v = _ciou_parts(q, t)
        return 1 - (iou - dist - alpha0 * v)

    h = 1e-6
    numeric = []
    for k in range(4):
        up, down = list(base), list(base)
        up[k] += h
        down[k] -= h
        numeric.append((frozen(up) - frozen(down)) / (2 * h))
    assert p.grad[0].tolist() == pytest.approx(numeric, rel=1e-5, abs=1e-8)


def test_ciou_weights_like_the_other_iou_losses():
    pred = torch.tensor([[0., 0., 2., 2.], [0., 0., 4., 2.]],
                        requires_grad=True)
    target = torch.tensor([[1., 0., 3., 2.], [0., 0., 4., 3.]])
    rows = CIoULoss(reduction='none')(pred, target)
    # (N, 4) weight -> its row mean: 1 and 0.5
    w = torch.tensor([[1., 1., 1., 1.], [0., 0., 1., 1.]])
    value = MODELS.build(dict(type='CIoULoss', loss_weight=12.0))(
        pred, target, w, avg_factor=2)
    expected = 12 * (rows[0] + 0.5 * rows[1]) / (2 + EPS32)
    assert value.item() == pytest.approx(expected.item(), rel=1e-6)
    zero = CIoULoss()(pred, target, torch.zeros(2))
    assert zero.item() == 0 and zero.requires_grad
    assert CIoULoss(reduction='sum')(pred, target).item() == pytest.approx(
        rows.sum().item(), rel=1e-6)
    with pytest.raises(ValueError, match="reduction must be"):
        CIoULoss(reduction='avg')
