"""Softmax and sigmoid cross-entropy (docs/losses.md).

Softmax: ``pred (N, C + 1)`` logits, ``label (N,)`` in ``[0, C]`` (C =
background in the R-CNN and SSD heads). Sigmoid: ``pred (N, K)`` logits; a
1-D ``label`` becomes one-hot over the K channels, and a label ``>= K`` (the
background of a sigmoid head) is an all-zero row. For the RPN (K = 1),
label 0 (object) gives target 1 and label 1 (background) target 0.
"""
import warnings
from typing import Optional

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch import Tensor

from ...registry import MODELS
from .utils import check_reduction, resolve_reduction, weight_reduce_loss


def cross_entropy(pred: Tensor,
                  label: Tensor,
                  weight: Optional[Tensor] = None,
                  reduction: str = 'mean',
                  avg_factor=None,
                  class_weight: Optional[Tensor] = None,
                  ignore_index: Optional[int] = -100,
                  avg_non_ignore: bool = False) -> Tensor:
    """Softmax CE per row, weighted by ``weight (N,)``, then reduced.

    With ``avg_non_ignore`` and no ``avg_factor``, ``'mean'`` divides by
    the number of labels different from ``ignore_index``.
    """
    ignore_index = -100 if ignore_index is None else ignore_index
    loss = F.cross_entropy(
        pred,
        label,
        weight=class_weight,
        reduction='none',
        ignore_index=ignore_index)
    if avg_factor is None and avg_non_ignore and reduction == 'mean':
        # A 0-d tensor: no host sync, and the same quotient as the count
        # as a Python number.
        avg_factor = label.numel() - (label == ignore_index).sum()
    if weight is not None:
        weight = weight.float()
    return weight_reduce_loss(loss, weight, reduction, avg_factor)


def _expand_onehot_labels(labels: Tensor, label_weights: Optional[Tensor],
                          label_channels: int, ignore_index: int):
    """``(N,)`` labels -> one-hot ``(N, K)`` targets, ``(N, K)`` weights
    and the ``(N, K)`` mask of rows whose label is not ignored."""
    valid = (labels >= 0) & (labels != ignore_index)
    in_range = valid & (labels < label_channels)
    bin_labels = labels.new_zeros((labels.size(0), label_channels))
    # A 1 in each in-range row's label column; other rows write their 0
    # back into a clamped column (no nonzero(), so no host sync).
    bin_labels.scatter_(1, labels.clamp(0, label_channels - 1)[:, None],
                        in_range[:, None].to(bin_labels.dtype))
    valid_mask = valid[:, None].expand(-1, label_channels).float()
    if label_weights is None:
        bin_weights = valid_mask
    else:
        bin_weights = label_weights.reshape(-1, 1).repeat(
            1, label_channels) * valid_mask
    return bin_labels, bin_weights, valid_mask


def binary_cross_entropy(pred: Tensor,
                         label: Tensor,
                         weight: Optional[Tensor] = None,
                         reduction: str = 'mean',
                         avg_factor=None,
                         class_weight: Optional[Tensor] = None,
                         ignore_index: Optional[int] = -100,
                         avg_non_ignore: bool = False) -> Tensor:
    """Elementwise BCE-with-logits (``class_weight`` as ``pos_weight``);
    ignored labels get weight 0."""
    ignore_index = -100 if ignore_index is None else ignore_index
    if pred.dim() != label.dim():
        label, weight, valid_mask = _expand_onehot_labels(
            label, weight, pred.size(-1), ignore_index)
    else:
        valid_mask = ((label >= 0) & (label != ignore_index)).float()
        weight = valid_mask if weight is None else weight * valid_mask
    if avg_factor is None and avg_non_ignore and reduction == 'mean':
        avg_factor = valid_mask.sum()
    loss = F.binary_cross_entropy_with_logits(
        pred, label.float(), pos_weight=class_weight, reduction='none')
    return weight_reduce_loss(loss, weight.float(), reduction, avg_factor)


def mask_cross_entropy(pred: Tensor,
                       target: Tensor,
                       label: Tensor,
                       reduction: str = 'mean',
                       avg_factor=None,
                       class_weight: Optional[Tensor] = None,
                       ignore_index=None,
                       **kwargs) -> Tensor:
    """Mask-head BCE: ``pred (R, C, h, w)``, ``target (R, h, w)``; each RoI
    uses the channel of its class ``label (R,)``. Returns shape ``(1,)``."""
    if reduction != 'mean' or avg_factor is not None or ignore_index:
        raise ValueError('mask_cross_entropy supports only reduction="mean" '
                         'without avg_factor or ignore_index')
    rois = torch.arange(pred.size(0), device=pred.device)
    pred_slice = pred[rois, label].squeeze(1)
    return F.binary_cross_entropy_with_logits(
        pred_slice, target, weight=class_weight, reduction='mean')[None]


@MODELS.register_module()
class CrossEntropyLoss(nn.Module):
    """Cross-entropy loss with mmdetection's options.

    Args:
        use_sigmoid: per-channel BCE instead of softmax CE.
        use_mask: mask-head BCE; ``forward``'s third argument is then the
            RoIs' class labels (mmdetection's calling convention).
        reduction: ``'none'``, ``'mean'`` or ``'sum'``.
        class_weight: per-class CE weight (softmax) or ``pos_weight``
            (sigmoid).
        ignore_index: label to ignore (default -100).
        loss_weight: multiplies the loss.
        avg_non_ignore: average over non-ignored labels only.
    """

    def __init__(self,
                 use_sigmoid: bool = False,
                 use_mask: bool = False,
                 reduction: str = 'mean',
                 class_weight=None,
                 ignore_index: Optional[int] = None,
                 loss_weight: float = 1.0,
                 avg_non_ignore: bool = False):
        super().__init__()
        if use_sigmoid and use_mask:
            raise ValueError('CrossEntropyLoss: use_sigmoid and use_mask are '
                             'exclusive; set at most one')
        self.use_sigmoid = use_sigmoid
        self.use_mask = use_mask
        self.reduction = check_reduction(reduction, 'CrossEntropyLoss')
        self.class_weight = class_weight
        self.ignore_index = ignore_index
        self.loss_weight = loss_weight
        self.avg_non_ignore = avg_non_ignore
        if (ignore_index is not None and not avg_non_ignore
                and reduction == 'mean'):
            warnings.warn('CrossEntropyLoss: with ignore_index and '
                          "reduction='mean', ignored labels still count in "
                          'the mean; set avg_non_ignore=True to exclude them')
        if use_sigmoid:
            self.cls_criterion = binary_cross_entropy
        elif use_mask:
            self.cls_criterion = mask_cross_entropy
        else:
            self.cls_criterion = cross_entropy

    def forward(self,
                cls_score: Tensor,
                label: Tensor,
                weight: Optional[Tensor] = None,
                avg_factor=None,
                reduction_override: Optional[str] = None,
                ignore_index: Optional[int] = None,
                **kwargs) -> Tensor:
        """``cls_score (N, C)`` logits, ``label (N,)`` (or ``(N, C)`` for
        sigmoid), ``weight (N,)`` per row (or ``(N, C)`` for sigmoid)."""
        reduction = resolve_reduction(self, reduction_override)
        if ignore_index is None:
            ignore_index = self.ignore_index
        class_weight = None
        if self.class_weight is not None:
            class_weight = cls_score.new_tensor(self.class_weight)
        return self.loss_weight * self.cls_criterion(
            cls_score,
            label,
            weight,
            class_weight=class_weight,
            reduction=reduction,
            avg_factor=avg_factor,
            ignore_index=ignore_index,
            avg_non_ignore=self.avg_non_ignore,
            **kwargs)

    def extra_repr(self) -> str:
        return (f'use_sigmoid={self.use_sigmoid}, '
                f'reduction={self.reduction!r}, '
                f'loss_weight={self.loss_weight}')
