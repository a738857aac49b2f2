"""Pad a training batch to one fixed size (large-scale jitter configs)."""
from typing import List, Optional, Tuple

import torch.nn as nn
import torch.nn.functional as F
from torch import Tensor

from detkit.registry import MODELS


@MODELS.register_module()
class BatchFixedSizePad(nn.Module):
    """Pad ``(B, C, H, W)`` at the bottom and right to ``size = (h, w)``.

    A batch augment of :class:`DetDataPreprocessor` (``batch_augments=
    [dict(type='BatchFixedSizePad', size=(1024, 1024))]``), applied in
    training after normalisation and the divisor padding, so padded pixels
    get ``img_pad_value`` in normalised units. A batch already at least as
    large in both sides is left as it is; a side larger than ``size`` is
    not cut. Each data sample's ``batch_input_shape`` and ``pad_shape``
    become the padded ``(H', W')`` (``size`` whenever the batch fits in
    it). Boxes do not move: the origin stays at the top left.

    Args:
        size: ``(h, w)``.
        img_pad_value: value of the padded pixels.
        pad_mask, mask_pad_value, pad_seg, seg_pad_value: padding of
            instance masks / semantic maps, which detkit does not produce;
            pad_mask and pad_seg must stay False.
    """

    def __init__(self,
                 size: Tuple[int, int],
                 img_pad_value: int = 0,
                 pad_mask: bool = False,
                 mask_pad_value: int = 0,
                 pad_seg: bool = False,
                 seg_pad_value: int = 255):
        super().__init__()
        if pad_mask or pad_seg:
            raise NotImplementedError(
                'BatchFixedSizePad: detkit has no instance masks or semantic'
                ' maps to pad; set pad_mask=False and pad_seg=False')
        if (not isinstance(size, (tuple, list)) or len(size) != 2
                or not all(isinstance(s, int) and s > 0 for s in size)):
            raise ValueError(f'BatchFixedSizePad: size must be (h, w) in '
                             f'positive ints, got {size!r}')
        self.size = tuple(size)
        self.img_pad_value = img_pad_value
        self.pad_mask = pad_mask
        self.mask_pad_value = mask_pad_value
        self.pad_seg = pad_seg
        self.seg_pad_value = seg_pad_value

    def forward(self, inputs: Tensor, data_samples: Optional[List] = None):
        """``inputs (B, C, H, W)`` -> ``(B, C, max(H, h), max(W, w))``."""
        src_h, src_w = inputs.shape[-2:]
        dst_h, dst_w = self.size
        if src_h >= dst_h and src_w >= dst_w:
            return inputs, data_samples
        inputs = F.pad(inputs, (0, max(0, dst_w - src_w), 0,
                                max(0, dst_h - src_h)),
                       value=self.img_pad_value)
        shape = tuple(inputs.shape[-2:])
        for sample in data_samples or []:
            sample.set_metainfo({'batch_input_shape': shape,
                                 'pad_shape': shape})
        return inputs, data_samples
