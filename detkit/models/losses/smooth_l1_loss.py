"""L1 and smooth-L1 box regression losses (docs/losses.md).

``L1 = |d|`` and ``SmoothL1 = 0.5 * d^2 / beta`` if ``|d| < beta`` else
``|d| - 0.5 * beta``, with ``d = pred - target`` elementwise. Two shortcuts
follow mmdetection: with a weight that has no positive entry the module
returns ``(pred * weight).sum()`` (a zero that keeps the graph), and an
empty target gives ``pred.sum() * 0``. The first is chosen on the device
(``torch.where`` on ``any(weight > 0)``) rather than by a Python branch,
so the loss never waits for the GPU; the value and gradient are those of
the branch taken.
"""
from typing import Optional

import torch
import torch.nn as nn
from torch import Tensor

from ...registry import MODELS
from .utils import (check_reduction, resolve_reduction, weight_reduce_loss,
                    zero_without_positive_weight)


def _check_pair(pred: Tensor, target: Tensor, where: str) -> None:
    if pred.shape != target.shape:
        raise ValueError(f'{where}: pred {tuple(pred.shape)} and target '
                         f'{tuple(target.shape)} must have the same shape')


def smooth_l1_loss(pred: Tensor,
                   target: Tensor,
                   weight: Optional[Tensor] = None,
                   beta: float = 1.0,
                   reduction: str = 'mean',
                   avg_factor=None) -> Tensor:
    """Elementwise smooth L1 of ``pred`` and ``target`` (same shape),
    weighted and reduced."""
    if beta <= 0:
        raise ValueError(f'smooth_l1_loss: beta must be > 0, got {beta}')
    if target.numel() == 0:
        loss = pred.sum() * 0
    else:
        _check_pair(pred, target, 'smooth_l1_loss')
        diff = torch.abs(pred - target)
        loss = torch.where(diff < beta, 0.5 * diff * diff / beta,
                           diff - 0.5 * beta)
    return weight_reduce_loss(loss, weight, reduction, avg_factor)


def l1_loss(pred: Tensor,
            target: Tensor,
            weight: Optional[Tensor] = None,
            reduction: str = 'mean',
            avg_factor=None) -> Tensor:
    """Elementwise ``|pred - target|``, weighted and reduced."""
    if target.numel() == 0:
        loss = pred.sum() * 0
    else:
        _check_pair(pred, target, 'l1_loss')
        loss = torch.abs(pred - target)
    return weight_reduce_loss(loss, weight, reduction, avg_factor)


def _per_row(pred: Tensor, weight: Optional[Tensor]) -> Optional[Tensor]:
    """A weight with one dimension fewer than ``pred`` (per box) spread
    over its last dimension."""
    if weight is not None and pred.dim() == weight.dim() + 1:
        return weight.unsqueeze(-1)
    return weight


@MODELS.register_module()
class SmoothL1Loss(nn.Module):
    """Smooth L1 loss.

    Args:
        beta: the L2/L1 switch point (> 0).
        reduction: ``'none'``, ``'mean'`` or ``'sum'``.
        loss_weight: multiplies the loss.
    """

    def __init__(self,
                 beta: float = 1.0,
                 reduction: str = 'mean',
                 loss_weight: float = 1.0):
        super().__init__()
        if beta <= 0:
            raise ValueError(f'SmoothL1Loss: beta must be > 0, got {beta}')
        self.beta = beta
        self.reduction = check_reduction(reduction, 'SmoothL1Loss')
        self.loss_weight = loss_weight

    def forward(self,
                pred: Tensor,
                target: Tensor,
                weight: Optional[Tensor] = None,
                avg_factor=None,
                reduction_override: Optional[str] = None) -> Tensor:
        """``pred``, ``target``, ``weight``: ``(..., 4)``."""
        reduction = resolve_reduction(self, reduction_override)
        loss = self.loss_weight * smooth_l1_loss(
            pred, target, _per_row(pred, weight), self.beta, reduction,
            avg_factor)
        return zero_without_positive_weight(loss, pred, weight, reduction)

    def extra_repr(self) -> str:
        return (f'beta={self.beta}, reduction={self.reduction!r}, '
                f'loss_weight={self.loss_weight}')


@MODELS.register_module()
class L1Loss(nn.Module):
    """L1 loss.

    Args:
        reduction: ``'none'``, ``'mean'`` or ``'sum'``.
        loss_weight: multiplies the loss.
    """

    def __init__(self, reduction: str = 'mean', loss_weight: float = 1.0):
        super().__init__()
        self.reduction = check_reduction(reduction, 'L1Loss')
        self.loss_weight = loss_weight

    def forward(self,
                pred: Tensor,
                target: Tensor,
                weight: Optional[Tensor] = None,
                avg_factor=None,
                reduction_override: Optional[str] = None) -> Tensor:
        """``pred``, ``target``, ``weight``: ``(..., 4)``."""
        reduction = resolve_reduction(self, reduction_override)
        loss = self.loss_weight * l1_loss(
            pred, target, _per_row(pred, weight), reduction, avg_factor)
        return zero_without_positive_weight(loss, pred, weight, reduction)

    def extra_repr(self) -> str:
        return f'reduction={self.reduction!r}, loss_weight={self.loss_weight}'
