"""RetinaNet's head: two towers of 3x3 convs shared across FPN levels.

Targets, focal / box losses and prediction are :class:`AnchorHead`'s
(docs/anchor_head.md); this file only adds the layers.
"""
import torch.nn as nn

from ...registry import MODELS
from ..layers import ConvModule
from .anchor_head import AnchorHead


@MODELS.register_module()
class RetinaHead(AnchorHead):
    """``stacked_convs`` 3x3 conv + ReLU layers (optionally normalised, e.g.
    GN) for classification and for regression, then ``retina_cls`` (A*C
    channels) and ``retina_reg`` (A*4). Outputs are anchor-major: channel
    ``a * C + c`` is anchor a, class c.

    The classification bias starts at ``-log((1 - 0.01) / 0.01)`` so that
    every anchor first predicts foreground with probability 0.01 (Focal
    Loss paper, §4.1).
    """

    def __init__(self,
                 num_classes: int,
                 in_channels: int,
                 stacked_convs: int = 4,
                 conv_cfg=None,
                 norm_cfg=None,
                 anchor_generator=dict(
                     type='AnchorGenerator',
                     octave_base_scale=4,
                     scales_per_octave=3,
                     ratios=[0.5, 1.0, 2.0],
                     strides=[8, 16, 32, 64, 128]),
                 init_cfg=dict(
                     type='Normal',
                     layer='Conv2d',
                     std=0.01,
                     override=dict(
                         type='Normal',
                         name='retina_cls',
                         std=0.01,
                         bias_prob=0.01)),
                 **kwargs):
        self.stacked_convs = stacked_convs
        self.conv_cfg = conv_cfg
        self.norm_cfg = norm_cfg
        super().__init__(
            num_classes,
            in_channels,
            anchor_generator=anchor_generator,
            init_cfg=init_cfg,
            **kwargs)

    def _init_layers(self) -> None:
        num_priors = self.shared_num_base_priors()
        self.cls_convs = nn.ModuleList()
        self.reg_convs = nn.ModuleList()
        channels = self.in_channels
        for _ in range(self.stacked_convs):
            for tower in (self.cls_convs, self.reg_convs):
                tower.append(
                    ConvModule(
                        channels,
                        self.feat_channels,
                        3,
                        stride=1,
                        padding=1,
                        conv_cfg=self.conv_cfg,
                        norm_cfg=self.norm_cfg))
            channels = self.feat_channels
        self.retina_cls = nn.Conv2d(
            channels, num_priors * self.cls_out_channels, 3, padding=1)
        self.retina_reg = nn.Conv2d(
            channels, num_priors * self.bbox_coder.encode_size, 3, padding=1)

    def forward_single(self, x):
        """One level: ``(B, A*C, H, W)`` scores, ``(B, A*4, H, W)`` deltas."""
        cls_feat = x
        reg_feat = x
        for conv in self.cls_convs:
            cls_feat = conv(cls_feat)
        for conv in self.reg_convs:
            reg_feat = conv(reg_feat)
        return self.retina_cls(cls_feat), self.retina_reg(reg_feat)
