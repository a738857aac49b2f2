"""IoU and GIoU losses on decoded boxes ``(N, 4)`` ``(x1, y1, x2, y2)``.

IoU is computed row by row (aligned) with the union clamped to >= 1e-6;
GIoU subtracts ``(enclosing area - union) / enclosing area``.
"""
import warnings
from typing import Optional

import torch
import torch.nn as nn
from torch import Tensor

from ...registry import MODELS
from ...structures import bbox_overlaps
from .utils import check_reduction, resolve_reduction, weight_reduce_loss


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


def _prepare_weight(pred: Tensor, weight: Optional[Tensor],
                    reduction: str):
    """mmdetection's weight handling: ``(early_result, weight)``. A weight
    without positive entries returns ``(pred * weight).sum()`` at once
    (unless ``reduction='none'``); a ``(N, 4)`` weight becomes its row
    mean."""
    if weight is None:
        return None, None
    if reduction != 'none' and not bool(torch.any(weight > 0)):
        if pred.dim() == weight.dim() + 1:
            weight = weight.unsqueeze(1)
        return (pred * weight).sum(), None
    if weight.dim() > 1:
        if weight.shape != pred.shape:
            raise ValueError(f'IoU losses: a 2-D weight must match pred '
                             f'{tuple(pred.shape)}, got {tuple(weight.shape)}')
        weight = weight.mean(-1)
    return None, weight


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
        early, weight = _prepare_weight(pred, weight, reduction)
        if early is not None:
            return early
        return self.loss_weight * iou_loss(pred, target, weight, self.mode,
                                           self.eps, reduction, avg_factor)


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
        early, weight = _prepare_weight(pred, weight, reduction)
        if early is not None:
            return early
        return self.loss_weight * giou_loss(pred, target, weight, self.eps,
                                            reduction, avg_factor)
