"""Loss reduction shared by every loss (docs/losses.md).

An elementwise loss is multiplied by its weight, then reduced: ``'none'``,
``'sum'``, ``'mean'``, or, with an ``avg_factor`` and ``'mean'``,
``sum / (avg_factor + eps)`` with ``eps`` the float32 machine epsilon
(1.1920929e-7) so an ``avg_factor`` of 0 cannot divide by zero.
"""
from typing import Optional, Union

import torch
from torch import Tensor

_REDUCTIONS = ('none', 'mean', 'sum')


def check_reduction(reduction: str, where: str) -> str:
    """``reduction`` if valid, else a ValueError naming ``where``."""
    if reduction not in _REDUCTIONS:
        raise ValueError(f"{where}: reduction must be 'none', 'mean' or "
                         f"'sum', got {reduction!r}")
    return reduction


def reduce_loss(loss: Tensor, reduction: str) -> Tensor:
    """``loss`` unchanged (``'none'``), its mean or its sum."""
    check_reduction(reduction, 'reduce_loss')
    if reduction == 'mean':
        return loss.mean()
    if reduction == 'sum':
        return loss.sum()
    return loss


def weight_reduce_loss(loss: Tensor,
                       weight: Optional[Tensor] = None,
                       reduction: str = 'mean',
                       avg_factor: Optional[Union[float, Tensor]] = None
                       ) -> Tensor:
    """Weight an elementwise loss, then reduce it.

    Args:
        loss: elementwise loss, any shape.
        weight: broadcastable to ``loss``, or None.
        reduction: ``'none'``, ``'mean'`` or ``'sum'``.
        avg_factor: with ``'mean'``, divide the sum by ``avg_factor + eps``
            instead of the element count; with ``'sum'`` it is an error.
    """
    if weight is not None:
        loss = loss * weight
    if avg_factor is None:
        return reduce_loss(loss, reduction)
    check_reduction(reduction, 'weight_reduce_loss')
    if reduction == 'mean':
        eps = torch.finfo(torch.float32).eps
        return loss.sum() / (avg_factor + eps)
    if reduction == 'sum':
        raise ValueError('weight_reduce_loss: avg_factor cannot be used with '
                         "reduction='sum'; use 'mean' (sum / avg_factor) or "
                         'drop avg_factor')
    return loss


def resolve_reduction(module, reduction_override: Optional[str]) -> str:
    """The module's ``reduction`` unless a (valid) override is given."""
    if reduction_override is None:
        return module.reduction
    return check_reduction(reduction_override,
                           f'{type(module).__name__}.forward')


def zero_without_positive_weight(loss: Tensor, pred: Tensor,
                                 weight: Optional[Tensor], reduction: str,
                                 unreduced_too: bool = True) -> Tensor:
    """mmdetection's early exit of the box losses: a weight without any
    entry > 0 gives ``(pred * weight).sum()`` instead of ``loss`` (L1 and
    smooth L1 for every reduction; the IoU losses, ``unreduced_too=False``,
    not for ``reduction='none'``).

    For a reduced loss the choice is a ``torch.where`` on the device, so
    the loss never waits for the GPU (both sides are computed; the value
    and gradient are bitwise those of the side chosen, up to the sign of a
    zero). With ``reduction='none'`` the two sides differ in shape, so it
    stays a Python branch.
    """
    if weight is None or (reduction == 'none' and not unreduced_too):
        return loss
    has_positive = torch.any(weight > 0)
    shaped = weight.unsqueeze(1) if pred.dim() == weight.dim() + 1 else \
        weight
    if reduction == 'none':
        return loss if bool(has_positive) else (pred * shaped).sum()
    return torch.where(has_positive, loss, (pred * shaped).sum())
