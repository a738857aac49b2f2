"""Pool each RoI from the one FPN level that suits its size (Lin et al., FPN,
eq. 1; docs/faster_rcnn.md).

A RoI of scale ``s = sqrt(w * h)`` (image pixels) goes to level
``clamp(floor(log2(s / finest_scale + 1e-6)), 0, L - 1)``: with
``finest_scale=56`` and four levels, ``s < 112`` -> P2 (stride 4),
``[112, 224)`` -> P3, ``[224, 448)`` -> P4, ``>= 448`` -> P5.
"""
from typing import Optional, Sequence

import torch
import torch.nn as nn
from mmengine.model import BaseModule
from torch import Tensor

from ....registry import MODELS
from ...layers.roi_align import RoIAlign


def map_roi_levels(rois: Tensor, num_levels: int,
                   finest_scale: float = 56) -> Tensor:
    """Level index ``(R,)`` long of each RoI ``(R, 5)``."""
    scale = torch.sqrt((rois[:, 3] - rois[:, 1]) * (rois[:, 4] - rois[:, 2]))
    levels = torch.floor(torch.log2(scale / finest_scale + 1e-6))
    return levels.clamp(min=0, max=num_levels - 1).long()


def rescale_rois(rois: Tensor, scale_factor: float) -> Tensor:
    """Scale each RoI's width and height by ``scale_factor`` about its
    centre (the batch index column is kept)."""
    cx = (rois[:, 1] + rois[:, 3]) * 0.5
    cy = (rois[:, 2] + rois[:, 4]) * 0.5
    w = (rois[:, 3] - rois[:, 1]) * scale_factor
    h = (rois[:, 4] - rois[:, 2]) * scale_factor
    return torch.stack(
        [rois[:, 0], cx - w * 0.5, cy - h * 0.5, cx + w * 0.5, cy + h * 0.5],
        dim=-1)


@MODELS.register_module()
class SingleRoIExtractor(BaseModule):
    """RoI features ``(R, out_channels, out_h, out_w)`` from the first
    ``len(featmap_strides)`` feature maps.

    Args:
        roi_layer: ``dict(type='RoIAlign', output_size=7, sampling_ratio=0,
            aligned=True)`` (mmcv's keys).
        out_channels: channels of the feature maps.
        featmap_strides: stride of each used level, finest first.
        finest_scale: RoI scale that maps to the boundary of levels 0/1,
            halved (56 -> boundary 112).
        init_cfg: unused (no parameters).
    """

    def __init__(self,
                 roi_layer: dict,
                 out_channels: int,
                 featmap_strides: Sequence[int],
                 finest_scale: int = 56,
                 init_cfg=None):
        super().__init__(init_cfg=init_cfg)
        layer_cfg = dict(roi_layer)
        layer_type = layer_cfg.pop('type', 'RoIAlign')
        if layer_type != 'RoIAlign':
            raise ValueError(
                f'SingleRoIExtractor: roi_layer type {layer_type!r} is not '
                "supported; use roi_layer=dict(type='RoIAlign', "
                'output_size=7, sampling_ratio=0)')
        self.roi_layers = nn.ModuleList([
            RoIAlign(spatial_scale=1 / stride, **layer_cfg)
            for stride in featmap_strides
        ])
        self.out_channels = out_channels
        self.featmap_strides = list(featmap_strides)
        self.finest_scale = finest_scale

    @property
    def num_inputs(self) -> int:
        """Feature levels used (the finest ones)."""
        return len(self.featmap_strides)

    def forward(self,
                feats: Sequence[Tensor],
                rois: Tensor,
                roi_scale_factor: Optional[float] = None) -> Tensor:
        """Pool ``rois (R, 5)`` = ``[batch_idx, x1, y1, x2, y2]`` (input
        pixels) from ``feats`` (per level ``(B, C, H_l, W_l)``); the output
        keeps the RoI order."""
        out_h, out_w = self.roi_layers[0].output_size
        num_levels = len(self.featmap_strides)
        roi_feats = feats[0].new_zeros(
            (rois.size(0), self.out_channels, out_h, out_w))
        if rois.size(0) == 0:
            return roi_feats
        if num_levels == 1:
            return self.roi_layers[0](feats[0], rois)
        levels = map_roi_levels(rois, num_levels, self.finest_scale)
        if roi_scale_factor is not None:
            rois = rescale_rois(rois, roi_scale_factor)
        for level in range(num_levels):
            inds = (levels == level).nonzero(as_tuple=True)[0]
            if inds.numel() > 0:
                roi_feats[inds] = self.roi_layers[level](feats[level],
                                                         rois[inds])
        return roi_feats

    def extra_repr(self) -> str:
        return (f'featmap_strides={self.featmap_strides}, '
                f'finest_scale={self.finest_scale}')

