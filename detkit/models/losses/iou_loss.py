"""IoU-family losses on decoded boxes ``(N, 4)`` ``(x1, y1, x2, y2)``.

IoU is computed row by row (aligned) with the union clamped to >= 1e-6;
GIoU subtracts ``(enclosing area - union) / enclosing area``; CIoU
subtracts a centre-distance and an aspect-ratio term; Bounded IoU is a
smooth L1 of four per-coordinate IoU bounds. See ``docs/losses.md``.
"""
import math
import warnings
from typing import Optional

import torch
import torch.nn as nn
from torch import Tensor

from ...registry import MODELS
from ...structures import bbox_overlaps
from .utils import (check_reduction, resolve_reduction, weight_reduce_loss,
                    zero_without_positive_weight)


def aligned_giou(pred: Tensor, target: Tensor, eps: float = 1e-6) -> Tensor:
    """GIoU of ``pred (..., 4)`` and ``target (..., 4)`` row by row."""
    area1 = (pred[..., 2] - pred[..., 0]) * (pred[..., 3] - pred[..., 1])
    area2 = (target[..., 2] - target[..., 0]) * (
        target[..., 3] - target[..., 1])
    lt = torch.max(pred[..., :2], target[..., :2])
    rb = torch.min(pred[..., 2:], target[..., 2:])
    wh = (rb - lt).clamp(min=0)
    overlap = wh[..., 0] * wh[..., 1]
    union = (area1 + area2 - overlap).clamp(min=eps)
    ious = overlap / union
    enclose_wh = (torch.max(pred[..., 2:], target[..., 2:]) -
                  torch.min(pred[..., :2], target[..., :2])).clamp(min=0)
    enclose_area = (enclose_wh[..., 0] * enclose_wh[..., 1]).clamp(min=eps)
    return ious - (enclose_area - union) / enclose_area


def iou_loss(pred: Tensor,
             target: Tensor,
             weight: Optional[Tensor] = None,
             mode: str = 'log',
             eps: float = 1e-6,
             reduction: str = 'mean',
             avg_factor=None) -> Tensor:
    """``-log(IoU)`` (``'log'``), ``1 - IoU`` (``'linear'``) or
    ``1 - IoU^2`` (``'square'``) per row, IoU clamped to >= ``eps``."""
    ious = bbox_overlaps(pred, target, is_aligned=True).clamp(min=eps)
    if mode == 'linear':
        loss = 1 - ious
    elif mode == 'square':
        loss = 1 - ious**2
    elif mode == 'log':
        loss = -ious.log()
    else:
        raise ValueError(f"iou_loss: mode must be 'linear', 'square' or "
                         f"'log', got {mode!r}")
    return weight_reduce_loss(loss, weight, reduction, avg_factor)


def giou_loss(pred: Tensor,
              target: Tensor,
              weight: Optional[Tensor] = None,
              eps: float = 1e-7,
              reduction: str = 'mean',
              avg_factor=None) -> Tensor:
    """``1 - GIoU`` per row."""
    loss = 1 - aligned_giou(pred, target, eps)
    return weight_reduce_loss(loss, weight, reduction, avg_factor)


def _prepare_weight(pred: Tensor, weight: Optional[Tensor]):
    """mmdetection's weight handling: a ``(N, 4)`` weight becomes its row
    mean. (A weight without positive entries gives ``(pred *
    weight).sum()``: :func:`zero_without_positive_weight` on the loss.)"""
    if weight is None:
        return None
    if weight.dim() > 1:
        if weight.shape != pred.shape:
            raise ValueError(f'IoU losses: a 2-D weight must match pred '
                             f'{tuple(pred.shape)}, got {tuple(weight.shape)}')
        weight = weight.mean(-1)
    return weight


@MODELS.register_module()
class IoULoss(nn.Module):
    """IoU loss.

    Args:
        linear: deprecated; True means ``mode='linear'``.
        eps: lower bound of the IoU.
        reduction: ``'none'``, ``'mean'`` or ``'sum'``.
        loss_weight: multiplies the loss.
        mode: ``'log'``, ``'linear'`` or ``'square'``.
    """

    def __init__(self,
                 linear: bool = False,
                 eps: float = 1e-6,
                 reduction: str = 'mean',
                 loss_weight: float = 1.0,
                 mode: str = 'log'):
        super().__init__()
        if mode not in ('linear', 'square', 'log'):
            raise ValueError(f"IoULoss: mode must be 'linear', 'square' or "
                             f"'log', got {mode!r}")
        if linear:
            mode = 'linear'
            warnings.warn('IoULoss: linear=True is deprecated, use '
                          "mode='linear'")
        self.mode = mode
        self.linear = linear
        self.eps = eps
        self.reduction = check_reduction(reduction, 'IoULoss')
        self.loss_weight = loss_weight

    def forward(self,
                pred: Tensor,
                target: Tensor,
                weight: Optional[Tensor] = None,
                avg_factor=None,
                reduction_override: Optional[str] = None) -> Tensor:
        """``pred``, ``target``: ``(N, 4)`` boxes; ``weight (N,)`` or
        ``(N, 4)``."""
        reduction = resolve_reduction(self, reduction_override)
        loss = self.loss_weight * iou_loss(
            pred, target, _prepare_weight(pred, weight), self.mode, self.eps,
            reduction, avg_factor)
        return zero_without_positive_weight(loss, pred, weight, reduction,
                                            unreduced_too=False)


@MODELS.register_module()
class GIoULoss(nn.Module):
    """Generalised IoU loss.

    Args:
        eps: lower bound of union and enclosing area.
        reduction: ``'none'``, ``'mean'`` or ``'sum'``.
        loss_weight: multiplies the loss.
    """

    def __init__(self,
                 eps: float = 1e-6,
                 reduction: str = 'mean',
                 loss_weight: float = 1.0):
        super().__init__()
        self.eps = eps
        self.reduction = check_reduction(reduction, 'GIoULoss')
        self.loss_weight = loss_weight

    def forward(self,
                pred: Tensor,
                target: Tensor,
                weight: Optional[Tensor] = None,
                avg_factor=None,
                reduction_override: Optional[str] = None) -> Tensor:
        """``pred``, ``target``: ``(N, 4)`` boxes; ``weight (N,)`` or
        ``(N, 4)``."""
        reduction = resolve_reduction(self, reduction_override)
        loss = self.loss_weight * giou_loss(
            pred, target, _prepare_weight(pred, weight), self.eps, reduction,
            avg_factor)
        return zero_without_positive_weight(loss, pred, weight, reduction,
                                            unreduced_too=False)


def bounded_iou_loss(pred: Tensor,
                     target: Tensor,
                     beta: float = 0.2,
                     eps: float = 1e-3) -> Tensor:
    """Bounded IoU terms (Tychsen-Smith & Petersson, 2018), ``(N, 4)``.

    With centres ``(cx, cy)``, sizes ``(w, h)`` and ``d = target - pred``
    (centres), each term bounds the IoU reachable when only that
    coordinate is wrong, and the four terms go through a smooth L1:

        l_x = 1 - max((w_t - 2|dx|) / (w_t + 2|dx| + eps), 0)   (l_y alike)
        l_w = 1 - min(w_t / (w_p + eps), w_p / (w_t + eps))     (l_h alike)
        loss = 0.5 l^2 / beta  if l < beta  else  l - 0.5 beta

    The target is a constant (no gradient reaches it). Identical boxes give
    ``l ~ eps / w``, so a loss of order ``(eps / w)^2 / beta``, not exactly 0.
    """
    pred_ctr = (pred[:, :2] + pred[:, 2:]) * 0.5
    pred_wh = pred[:, 2:] - pred[:, :2]
    target = target.detach()
    target_ctr = (target[:, :2] + target[:, 2:]) * 0.5
    target_wh = target[:, 2:] - target[:, :2]
    shift = 2 * (target_ctr - pred_ctr).abs()
    loss_xy = 1 - ((target_wh - shift) /
                   (target_wh + shift + eps)).clamp(min=0)
    loss_wh = 1 - torch.min(target_wh / (pred_wh + eps),
                            pred_wh / (target_wh + eps))
    # columns: x, y, w, h
    terms = torch.cat([loss_xy, loss_wh], dim=1)
    return torch.where(terms < beta, 0.5 * terms * terms / beta,
                       terms - 0.5 * beta)


def aligned_ciou(pred: Tensor, target: Tensor, eps: float = 1e-7) -> Tensor:
    """Complete IoU (Zheng et al., 2020) of ``pred (N, 4)`` and ``target
    (N, 4)`` row by row, ``(N,)``:

        CIoU = IoU - rho^2 / c^2 - alpha * v
        v = 4 / pi^2 * (atan(w_t / h_t) - atan(w_p / h_p))^2
        alpha = v / (1 - IoU + v)  where IoU > 0.5, else 0

    ``rho`` is the distance of the centres, ``c`` the diagonal of the
    smallest enclosing box. ``eps`` is added to the union, to ``c^2`` and to
    both heights. ``alpha`` is a constant for the gradient (the paper's
    choice) and zero for IoU <= 0.5, as in mmdetection. Where ``v = 0``
    the term is 0; the plain quotient would be 0 / 0 = NaN for a box equal
    to its target (IoU rounds to 1 in float32).
    """
    lt = torch.max(pred[:, :2], target[:, :2])
    rb = torch.min(pred[:, 2:], target[:, 2:])
    overlap = (rb - lt).clamp(min=0).prod(dim=1)
    pred_wh = pred[:, 2:] - pred[:, :2]
    target_wh = target[:, 2:] - target[:, :2]
    union = pred_wh.prod(dim=1) + target_wh.prod(dim=1) - overlap + eps
    ious = overlap / union
    enclose_wh = (torch.max(pred[:, 2:], target[:, 2:]) -
                  torch.min(pred[:, :2], target[:, :2])).clamp(min=0)
    c2 = (enclose_wh**2).sum(dim=1) + eps
    # squared centre distance: ((x1 + x2)_t - (x1 + x2)_p)^2 / 4 + same in y
    rho2 = (((target[:, :2] + target[:, 2:]) -
             (pred[:, :2] + pred[:, 2:]))**2).sum(dim=1) / 4
    v = (4 / math.pi**2) * (
        torch.atan(target_wh[:, 0] / (target_wh[:, 1] + eps)) -
        torch.atan(pred_wh[:, 0] / (pred_wh[:, 1] + eps)))**2
    with torch.no_grad():
        active = (ious > 0.5) & (v > 0)
        alpha = torch.where(active, v / (1 - ious + v), torch.zeros_like(v))
    return ious - (rho2 / c2 + alpha * v)


def ciou_loss(pred: Tensor,
              target: Tensor,
              weight: Optional[Tensor] = None,
              eps: float = 1e-7,
              reduction: str = 'mean',
              avg_factor=None) -> Tensor:
    """``1 - CIoU`` per row, CIoU clamped to ``[-1, 1]``."""
    loss = 1 - aligned_ciou(pred, target, eps).clamp(min=-1.0, max=1.0)
    return weight_reduce_loss(loss, weight, reduction, avg_factor)


@MODELS.register_module()
class BoundedIoULoss(nn.Module):
    """Bounded IoU loss: :func:`bounded_iou_loss`, four terms per box.

    Args:
        beta: smooth L1 switch point.
        eps: added to the denominators.
        reduction: ``'none'`` (``(N, 4)``), ``'mean'`` or ``'sum'``.
        loss_weight: multiplies the loss.

    ``weight`` is ``(N, 4)`` (one per term, as the RoI head's box weights)
    or ``(N,)`` (one per box); ``'mean'`` averages over the ``4 N`` terms,
    or divides their sum by ``avg_factor``. A weight without a positive
    entry returns 0 at once (``(pred * weight).sum()``), as in the IoU
    losses.
    """

    def __init__(self,
                 beta: float = 0.2,
                 eps: float = 1e-3,
                 reduction: str = 'mean',
                 loss_weight: float = 1.0):
        super().__init__()
        if beta <= 0:
            raise ValueError(f'BoundedIoULoss: beta must be positive, got '
                             f'{beta}')
        self.beta = beta
        self.eps = eps
        self.reduction = check_reduction(reduction, 'BoundedIoULoss')
        self.loss_weight = loss_weight

    def forward(self,
                pred: Tensor,
                target: Tensor,
                weight: Optional[Tensor] = None,
                avg_factor=None,
                reduction_override: Optional[str] = None) -> Tensor:
        """``pred``, ``target``: ``(N, 4)`` boxes; ``weight (N, 4)`` or
        ``(N,)``."""
        reduction = resolve_reduction(self, reduction_override)
        if weight is not None and weight.dim() == 1:
            weight = weight[:, None]
        loss = self.loss_weight * weight_reduce_loss(
            bounded_iou_loss(pred, target, self.beta, self.eps), weight,
            reduction, avg_factor)
        return zero_without_positive_weight(loss, pred, weight, reduction,
                                            unreduced_too=False)


@MODELS.register_module()
class CIoULoss(nn.Module):
    """Complete IoU loss, ``1 - CIoU`` (:func:`aligned_ciou`).

    Args:
        eps: added to the union, the enclosing diagonal and the heights.
        reduction: ``'none'``, ``'mean'`` or ``'sum'``.
        loss_weight: multiplies the loss.
    """

    def __init__(self,
                 eps: float = 1e-6,
                 reduction: str = 'mean',
                 loss_weight: float = 1.0):
        super().__init__()
        self.eps = eps
        self.reduction = check_reduction(reduction, 'CIoULoss')
        self.loss_weight = loss_weight

    def forward(self,
                pred: Tensor,
                target: Tensor,
                weight: Optional[Tensor] = None,
                avg_factor=None,
                reduction_override: Optional[str] = None) -> Tensor:
        """``pred``, ``target``: ``(N, 4)`` boxes; ``weight (N,)`` or
        ``(N, 4)`` (its row mean)."""
        reduction = resolve_reduction(self, reduction_override)
        loss = self.loss_weight * ciou_loss(
            pred, target, _prepare_weight(pred, weight), self.eps, reduction,
            avg_factor)
        return zero_without_positive_weight(loss, pred, weight, reduction,
                                            unreduced_too=False)
