"""Top-k classification accuracy in percent (the R-CNN ``acc`` log)."""
from typing import Optional, Sequence, Union

import torch.nn as nn
from torch import Tensor

from ...registry import MODELS


def accuracy(pred: Tensor,
             target: Tensor,
             topk: Union[int, Sequence[int]] = 1,
             thresh: Optional[float] = None):
    """Share of rows whose target is among the ``k`` highest scores, x100.

    Args:
        pred: ``(N, C)`` scores.
        target: ``(N,)`` class indices.
        topk: an int, or a tuple of ints for several accuracies.
        thresh: a hit also needs a score ``> thresh``.

    Returns:
        A ``(1,)`` tensor (a list of them for a tuple ``topk``); a scalar 0
        for empty input.
    """
    single = isinstance(topk, int)
    topk = (topk, ) if single else tuple(topk)
    if pred.size(0) == 0:
        zeros = [pred.new_tensor(0.) for _ in topk]
        return zeros[0] if single else zeros
    maxk = max(topk)
    if pred.dim() != 2 or target.dim() != 1 or pred.size(0) != target.size(
            0) or maxk > pred.size(1):
        raise ValueError(
            f'accuracy: pred must be (N, C) with C >= {maxk} and target '
            f'(N,), got {tuple(pred.shape)} and {tuple(target.shape)}')
    pred_value, pred_label = pred.topk(maxk, dim=1)
    pred_label, pred_value = pred_label.t(), pred_value.t()  # (maxk, N)
    correct = pred_label.eq(target.view(1, -1).expand_as(pred_label))
    if thresh is not None:
        correct = correct & (pred_value > thresh)
    res = [
        correct[:k].reshape(-1).float().sum(0, keepdim=True).mul_(
            100.0 / pred.size(0)) for k in topk
    ]
    return res[0] if single else res


@MODELS.register_module()
class Accuracy(nn.Module):
    """Module form of :func:`accuracy`."""

    def __init__(self, topk=(1, ), thresh: Optional[float] = None):
        super().__init__()
        self.topk = topk
        self.thresh = thresh

    def forward(self, pred: Tensor, target: Tensor):
        return accuracy(pred, target, self.topk, self.thresh)
