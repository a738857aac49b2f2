"""Sigmoid focal loss of RetinaNet (Lin et al., 2017; docs/losses.md).

With logits ``x``, ``p = sigmoid(x)`` and a 0/1 target ``t`` per class,

    pt   = (1 - p) * t + p * (1 - t)
    loss = BCEWithLogits(x, t) * (alpha * t + (1 - alpha) * (1 - t)) * pt^gamma

Targets are class labels ``(N,)`` in ``[0, C]``; label ``C`` (background)
becomes an all-zero row. This is mmdetection's CPU formula (its CUDA
kernel is the same function up to float rounding), used on every device.
:func:`py_sigmoid_focal_loss` below is that formula as written, and serves
every input.

RetinaNet evaluates it on ``B * N * C`` elements (2 x 200k anchors x 80
classes = 32M per iteration), where the formula written with a one-hot
target makes ~20 full-size temporaries forward and as many backward. In the
training case (:func:`uses_fast_path`: label targets, a per-anchor or no
weight, ``gamma = 2``, a summed reduction) :class:`_FocalLossSum` computes
the same numbers with a handful: every element is first treated as a
negative (``t = 0``, where the formula collapses to ``(1 - alpha) * p^2 *
BCE(x, 0)``), then the one positive column of each foreground anchor is
overwritten. Both directions repeat the arithmetic of the one-hot formula
and of autograd's backward of it step by step, so loss and gradient are
bitwise the same as the formula's on the same tensors
(tests/test_models/test_losses/test_focal_loss_fast_path.py).
"""
from typing import Optional

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch import Tensor

from ...registry import MODELS
from .utils import check_reduction, resolve_reduction, weight_reduce_loss


def py_sigmoid_focal_loss(pred: Tensor,
                          target: Tensor,
                          weight: Optional[Tensor] = None,
                          gamma: float = 2.0,
                          alpha: float = 0.25,
                          reduction: str = 'mean',
                          avg_factor=None,
                          activated: bool = False) -> Tensor:
    """The focal loss formula of the module docstring, elementwise on
    ``pred (N, C)`` (logits, or probabilities when ``activated``) against
    ``target``: labels ``(N,)`` or a one-hot / soft ``(N, C)``; ``weight``
    ``(N,)`` or ``(N, C)``."""
    if target.dim() != pred.dim():
        target = _one_hot(target, pred.size(1))
    target = target.type_as(pred)
    if activated:
        prob = pred
        bce = F.binary_cross_entropy(pred, target, reduction='none')
    else:
        prob = pred.sigmoid()
        bce = F.binary_cross_entropy_with_logits(
            pred, target, reduction='none')
    pt = (1 - prob) * target + prob * (1 - target)
    focal_weight = (alpha * target + (1 - alpha) *
                    (1 - target)) * pt.pow(gamma)
    loss = bce * focal_weight
    return weight_reduce_loss(loss, _broadcast_weight(weight, loss),
                              reduction, avg_factor)


def uses_fast_path(pred: Tensor, target: Tensor, weight: Optional[Tensor],
                   gamma: float, reduction: str, avg_factor,
                   activated: bool) -> bool:
    """Whether :class:`_FocalLossSum` computes this loss: label targets
    ``(N,)`` for logits ``(N, C)``, ``gamma == 2``, a per-anchor (or no)
    weight, and a sum (``'sum'``, or ``'mean'`` over an ``avg_factor``)."""
    return (target.dim() == 1 and pred.dim() == 2 and not activated
            and gamma == 2.0 and reduction in ('sum', 'mean')
            and (reduction == 'sum' or avg_factor is not None)
            and (weight is None or weight.numel() == pred.size(0)))


def _check_labels(labels: Tensor, num_classes: int) -> None:
    """Labels outside ``[0, C]`` are an error. On the CPU it is raised at
    once; on an accelerator the check is queued on the device
    (``torch._assert_async``) and fails at the next synchronisation, so
    the loss never waits for the device to read two numbers."""
    if labels.numel() == 0:
        return
    where = (f'FocalLoss: labels must lie in [0, {num_classes}] '
             f'(background = {num_classes})')
    if labels.device.type != 'cpu':
        torch._assert_async(
            ((labels >= 0) & (labels <= num_classes)).all(), where)
    elif labels.min() < 0 or labels.max() > num_classes:
        raise ValueError(f'{where}, got min {int(labels.min())} and max '
                         f'{int(labels.max())}')


def _one_hot(labels: Tensor, num_classes: int) -> Tensor:
    """``(N,)`` labels in ``[0, C]`` -> ``(N, C)``; label C is all zeros."""
    _check_labels(labels, num_classes)
    return F.one_hot(labels, num_classes + 1)[:, :num_classes]


def _broadcast_weight(weight: Optional[Tensor], loss: Tensor):
    """Per-anchor ``(N,)`` weight -> ``(N, 1)``; ``(N, C)`` is kept."""
    if weight is None or weight.shape == loss.shape:
        return weight
    if weight.size(0) == loss.size(0) and weight.numel() == loss.size(0):
        return weight.reshape(-1, 1)
    if weight.numel() == loss.numel():
        return weight.reshape(loss.size(0), -1)
    raise ValueError(f'FocalLoss: weight of shape {tuple(weight.shape)} fits '
                     f'neither (N,) nor (N, C) for a loss of shape '
                     f'{tuple(loss.shape)}')


def _label_columns(labels: Tensor, num_classes: int):
    """``is_pos (N, 1)`` (foreground rows) and ``cols (N, 1)``: each
    row's label column, clamped into range for background rows."""
    is_pos = (labels < num_classes)[:, None]
    return is_pos, labels.clamp(max=num_classes - 1)[:, None]


class _FocalLossSum(torch.autograd.Function):
    """``sum(focal(x, t) * w)`` with gamma 2 for label targets.

    Forward and backward recompute ``sigmoid(x)`` and ``logsigmoid(x)`` on
    the full ``(N, C)`` tensor, as the general path does, so transcendental
    values come from the same kernels on the same layout; everything else
    is IEEE arithmetic whose order follows the general path (the
    simplifications used are exact: ``a * 1``, ``a * 0 + b``, ``2 * a``).
    The positive column of every row is computed (elementwise, so each
    value is what a computation on the positives alone gives) and written
    only where the row is foreground.
    """

    @staticmethod
    def forward(ctx, pred, labels, weight, alpha):
        ctx.in_dtype = pred.dtype
        if pred.dtype in (torch.float16, torch.bfloat16):
            # fp16/bf16 logits (AMP): compute and sum in float32.
            pred = pred.float()
        if weight is not None:
            weight = weight.to(pred.dtype)
        # Each row's label column (any column for a background row: its
        # value is written back unchanged). Gathers over all rows instead
        # of the positives' indices: no nonzero(), so no host sync.
        is_pos, cols = _label_columns(labels, pred.size(1))
        prob = pred.sigmoid()
        log_sig = F.logsigmoid(pred)
        pos_prob = prob.gather(1, cols)
        pos_log_sig = log_sig.gather(1, cols)
        # Negatives: pt = p, weight (1 - alpha), BCE(x, 0) = x - log s(x).
        bce = log_sig.neg_().add_(pred)
        loss = bce.mul_(prob.mul_(prob).mul_(1 - alpha))
        # Positives: pt = 1 - p, weight alpha, BCE(x, 1) = -log s(x).
        pt = 1 - pos_prob
        pos_loss = (-pos_log_sig) * (pt * pt * alpha)
        loss.scatter_(1, cols,
                      torch.where(is_pos, pos_loss, loss.gather(1, cols)))
        if weight is not None:
            loss.mul_(weight[:, None])
        ctx.save_for_backward(pred, weight, is_pos, cols)
        ctx.alpha = alpha
        return loss.sum()

    @staticmethod
    def backward(ctx, grad_output):
        pred, weight, is_pos, cols = ctx.saved_tensors
        alpha = ctx.alpha
        grad_output = grad_output.to(pred.dtype)
        # d(sum)/d(loss) per element (times the per-anchor weight).
        grad_loss = grad_output.expand(pred.size(0), 1)
        if weight is not None:
            grad_loss = grad_loss * weight[:, None]
        prob = pred.sigmoid()
        log_sig = F.logsigmoid(pred)
        pos_prob = prob.gather(1, cols)
        pos_bce = -log_sig.gather(1, cols)
        bce = log_sig.neg_().add_(pred)
        # Negatives. loss = bce * fw, fw = (1 - alpha) * p^2.
        grad_bce = (prob * prob).mul_(1 - alpha).mul_(grad_loss)
        grad_pt = bce.mul_(grad_loss).mul_(1 - alpha).mul_(2.).mul_(prob)
        # Through p = sigmoid(x) (grad * (1 - p) * p) and through the BCE
        # (grad * (sigmoid(x) - t)).
        grad = grad_pt.mul_(1 - prob).mul_(prob).add_(grad_bce.mul_(prob))
        # Positives: the same chain with pt = 1 - p, weight alpha, t = 1.
        pt = 1 - pos_prob
        pos_grad_bce = grad_loss * (pt * pt * alpha)
        pos_grad_pt = grad_loss * pos_bce * alpha * (2. * pt)
        pos_grad = (-pos_grad_pt) * (1 - pos_prob) * pos_prob + (
            pos_prob - 1) * pos_grad_bce
        grad.scatter_(1, cols,
                      torch.where(is_pos, pos_grad, grad.gather(1, cols)))
        return grad.to(ctx.in_dtype), None, None, None


def sigmoid_focal_loss(pred: Tensor,
                       target: Tensor,
                       weight: Optional[Tensor] = None,
                       gamma: float = 2.0,
                       alpha: float = 0.25,
                       reduction: str = 'mean',
                       avg_factor=None,
                       activated: bool = False) -> Tensor:
    """The focal loss (:func:`py_sigmoid_focal_loss`), through
    :class:`_FocalLossSum` where :func:`uses_fast_path` says it applies."""
    if not uses_fast_path(pred, target, weight, gamma, reduction,
                          avg_factor, activated):
        return py_sigmoid_focal_loss(pred, target, weight, gamma, alpha,
                                     reduction, avg_factor, activated)
    _check_labels(target, pred.size(1))
    if weight is not None:
        weight = weight.reshape(-1)
    total = _FocalLossSum.apply(pred, target, weight, alpha)
    if reduction == 'sum':
        if avg_factor is not None:
            return weight_reduce_loss(total, None, reduction, avg_factor)
        return total
    eps = torch.finfo(torch.float32).eps
    return total / (avg_factor + eps)


@MODELS.register_module()
class FocalLoss(nn.Module):
    """Sigmoid focal loss.

    Args:
        use_sigmoid: must be True (mmdetection has no softmax variant).
        gamma, alpha: focusing and balance parameters.
        reduction: ``'none'``, ``'mean'`` or ``'sum'``.
        loss_weight: multiplies the loss.
        activated: ``pred`` already holds probabilities.
    """

    def __init__(self,
                 use_sigmoid: bool = True,
                 gamma: float = 2.0,
                 alpha: float = 0.25,
                 reduction: str = 'mean',
                 loss_weight: float = 1.0,
                 activated: bool = False):
        super().__init__()
        if use_sigmoid is not True:
            raise ValueError('FocalLoss: only the sigmoid focal loss exists '
                             '(use_sigmoid=True)')
        self.use_sigmoid = use_sigmoid
        self.gamma = gamma
        self.alpha = alpha
        self.reduction = check_reduction(reduction, 'FocalLoss')
        self.loss_weight = loss_weight
        self.activated = activated

    def forward(self,
                pred: Tensor,
                target: Tensor,
                weight: Optional[Tensor] = None,
                avg_factor=None,
                reduction_override: Optional[str] = None) -> Tensor:
        """``pred (N, C)``; ``target (N,)`` labels (C = background) or
        ``(N, C)``; ``weight (N,)`` or ``(N, C)``."""
        reduction = resolve_reduction(self, reduction_override)
        return self.loss_weight * sigmoid_focal_loss(
            pred,
            target,
            weight,
            gamma=self.gamma,
            alpha=self.alpha,
            reduction=reduction,
            avg_factor=avg_factor,
            activated=self.activated)

    def extra_repr(self) -> str:
        return (f'gamma={self.gamma}, alpha={self.alpha}, '
                f'reduction={self.reduction!r}, '
                f'loss_weight={self.loss_weight}')

