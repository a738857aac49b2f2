"""Sigmoid focal loss of RetinaNet (MMDET_SEMANTICS §6).

With logits ``x``, ``p = sigmoid(x)`` and a 0/1 target ``t`` per class,

    pt   = (1 - p) * t + p * (1 - t)
    loss = BCEWithLogits(x, t) * (alpha * t + (1 - alpha) * (1 - t)) * pt^gamma

Targets are class labels ``(N,)`` in ``[0, C]``; label ``C`` (background)
becomes an all-zero row. This is mmdetection's CPU formula (its CUDA
kernel is the same function up to float rounding), used on every device.
"""
from typing import Optional

import torch.nn as nn
import torch.nn.functional as F
from torch import Tensor

from ...registry import MODELS
from .utils import check_reduction, resolve_reduction, weight_reduce_loss


def _one_hot(labels: Tensor, num_classes: int) -> Tensor:
    """``(N,)`` labels in ``[0, C]`` -> ``(N, C)``; label C is all zeros."""
    if labels.numel() > 0 and (labels.min() < 0 or labels.max() > num_classes):
        raise ValueError(
            f'FocalLoss: labels must lie in [0, {num_classes}] (background '
            f'= {num_classes}), got min {int(labels.min())} and max '
            f'{int(labels.max())}')
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


def sigmoid_focal_loss(pred: Tensor,
                       target: Tensor,
                       weight: Optional[Tensor] = None,
                       gamma: float = 2.0,
                       alpha: float = 0.25,
                       reduction: str = 'mean',
                       avg_factor=None,
                       activated: bool = False) -> Tensor:
    """Focal loss of ``pred (N, C)`` (logits, or probabilities when
    ``activated``) against ``target``: labels ``(N,)`` or a one-hot /
    soft ``(N, C)``."""
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

