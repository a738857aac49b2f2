"""RoIAlign (He et al., Mask R-CNN) with mmcv's module interface, computed
by ``torchvision.ops.roi_align``.

mmcv's semantics (docs/faster_rcnn.md) and torchvision's kernel agree for
``aligned=True`` and ``sampling_ratio=0``: the RoI ``(x1, y1, x2, y2)`` in
image pixels maps to ``x * spatial_scale - 0.5`` on the feature map (pixel
centres sit at integer feature coordinates), the RoI size is not forced to
be >= 1, each of the ``out_h x out_w`` bins averages
``ceil(roi_h / out_h) x ceil(roi_w / out_w)`` bilinear samples placed at the
centres of a regular sub-grid, and a sample more than one pixel outside the
map contributes 0 while still counting in the average.
"""
from typing import Sequence, Union

import torch.nn as nn
from torch import Tensor
from torchvision.ops import roi_align


class RoIAlign(nn.Module):
    """Average RoIAlign of one feature map.

    Args:
        output_size: ``out`` or ``(out_h, out_w)`` bins.
        spatial_scale: feature pixels per image pixel (``1 / stride``).
        sampling_ratio: samples per bin side; 0 picks
            ``ceil(roi_size / output_size)`` per RoI.
        pool_mode: only ``'avg'`` (mmcv's ``'max'`` is not supported).
        aligned: shift by half a pixel (True in every mmdetection 3.x
            config); False is the original Mask R-CNN RoIAlign.
        use_torchvision: accepted for mmcv config compatibility; the kernel
            is always torchvision's.
    """

    def __init__(self,
                 output_size: Union[int, Sequence[int]],
                 spatial_scale: float = 1.0,
                 sampling_ratio: int = 0,
                 pool_mode: str = 'avg',
                 aligned: bool = True,
                 use_torchvision: bool = False):
        super().__init__()
        if pool_mode != 'avg':
            raise ValueError(f"RoIAlign: pool_mode {pool_mode!r} is not "
                             "supported; use pool_mode='avg'")
        if isinstance(output_size, int):
            output_size = (output_size, output_size)
        self.output_size = tuple(int(s) for s in output_size)
        self.spatial_scale = float(spatial_scale)
        self.sampling_ratio = int(sampling_ratio)
        self.pool_mode = pool_mode
        self.aligned = aligned

    def forward(self, feats: Tensor, rois: Tensor) -> Tensor:
        """``feats (B, C, H, W)``, ``rois (R, 5)`` = ``[batch_idx, x1, y1,
        x2, y2]`` in image pixels -> ``(R, C, out_h, out_w)``."""
        return roi_align(feats, rois.to(feats.dtype), self.output_size,
                         self.spatial_scale, self.sampling_ratio,
                         self.aligned)

    def extra_repr(self) -> str:
        return (f'output_size={self.output_size}, '
                f'spatial_scale={self.spatial_scale}, '
                f'sampling_ratio={self.sampling_ratio}, '
                f'aligned={self.aligned}')
