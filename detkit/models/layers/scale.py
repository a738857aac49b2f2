"""A learnable scalar multiplier (mmcv's ``Scale``).

FCOS and ATSS scale each FPN level's box regression by one of these, so a
shared head can still regress level-dependent magnitudes. The parameter is
named ``scale`` and is 0-dimensional, as in mmdetection checkpoints
(``bbox_head.scales.<level>.scale``, shape ``()``).
"""
import torch
import torch.nn as nn
from torch import Tensor

from detkit.registry import MODELS


@MODELS.register_module()
class Scale(nn.Module):
    """``x * scale`` with a learnable float32 ``scale``.

    Args:
        scale: initial value.
    """

    def __init__(self, scale: float = 1.0):
        super().__init__()
        self.scale = nn.Parameter(torch.tensor(scale, dtype=torch.float))

    def forward(self, x: Tensor) -> Tensor:
        return x * self.scale
