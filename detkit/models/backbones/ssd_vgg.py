"""VGG backbone of SSD (Liu et al., 2016): VGG-16 convs, pool5 3x3/1 and the
dilated fc6/fc7 convolutions, as one ``features`` nn.Sequential whose indices
match mmdetection's (and the caffe VGG-16 weights converted for it)."""
import warnings

import torch.nn as nn
from mmengine.model import BaseModule

from detkit.registry import MODELS


@MODELS.register_module()
class SSDVGG(BaseModule):
    """VGG for SSD. ``features`` holds, for VGG-16 with the defaults:

    - 0..29: five blocks of (3x3 pad 1 conv + ReLU) x (2, 2, 3, 3, 3), a
      2x2/2 max-pool (``ceil_mode``) after blocks 1-4 (indices 4, 9, 16,
      23), none after block 5 unless ``with_last_pool``;
    - 30: max-pool 3x3 stride 1 pad 1 (pool5, keeps the size);
    - 31, 32: fc6 = conv 512->1024 3x3 pad 6 dilation 6, ReLU;
    - 33, 34: fc7 = conv 1024->1024 1x1, ReLU.

    Input (B, 3, H, W). Output: the activations after each index in
    ``out_feature_indices`` (a tuple, or the tensor itself when there is
    one). With (22, 34) at 300x300 they are conv4_3 (B, 512, 38, 38) and fc7
    (B, 1024, 19, 19); sizes are ceil(H / 8) and ceil(H / 16).

    Args:
        out_indices: VGG stage indices, kept for config compatibility;
            the outputs are chosen by ``out_feature_indices``.
        input_size, l2_norm_scale: deprecated (now in SSDNeck), ignored.
    """

    arch_settings = {
        11: (1, 1, 2, 2, 2),
        13: (2, 2, 2, 2, 2),
        16: (2, 2, 3, 3, 3),
        19: (2, 2, 4, 4, 4)
    }

    def __init__(self,
                 depth=16,
                 with_last_pool=False,
                 ceil_mode=True,
                 out_indices=(3, 4),
                 out_feature_indices=(22, 34),
                 pretrained=None,
                 init_cfg=None,
                 input_size=None,
                 l2_norm_scale=None):
        if depth not in self.arch_settings:
            raise KeyError(f'SSDVGG: invalid depth {depth}; choose one of '
                           f'{sorted(self.arch_settings)}')
        if init_cfg is not None and pretrained is not None:
            raise ValueError('SSDVGG: give init_cfg or pretrained, not both')
        for name, value in (('input_size', input_size),
                            ('l2_norm_scale', l2_norm_scale)):
            if value is not None:
                warnings.warn(f'SSDVGG: {name} is deprecated and ignored '
                              '(the L2Norm lives in SSDNeck)')
        if pretrained is not None:
            init_cfg = dict(type='Pretrained', checkpoint=pretrained)
        elif init_cfg is None:
            init_cfg = [
                dict(type='Kaiming', layer='Conv2d'),
                dict(type='Constant', val=1, layer='BatchNorm2d'),
                dict(type='Normal', std=0.01, layer='Linear')
            ]
        super().__init__(init_cfg)
        if not all(0 <= i < 5 for i in out_indices):
            raise ValueError(f'SSDVGG: out_indices {out_indices} must lie '
                             'in [0, 4]')
        self.out_indices = tuple(out_indices)

        layers = []
        in_chans = 3
        stage_blocks = self.arch_settings[depth]
        for stage, num_convs in enumerate(stage_blocks):
            out_chans = min(64 * 2**stage, 512)
            for _ in range(num_convs):
                layers += [
                    nn.Conv2d(in_chans, out_chans, 3, padding=1),
                    nn.ReLU(inplace=True)
                ]
                in_chans = out_chans
            if stage < len(stage_blocks) - 1 or with_last_pool:
                layers.append(
                    nn.MaxPool2d(2, stride=2, ceil_mode=ceil_mode))
        layers += [
            nn.MaxPool2d(3, stride=1, padding=1),
            nn.Conv2d(in_chans, 1024, 3, padding=6, dilation=6),
            nn.ReLU(inplace=True),
            nn.Conv2d(1024, 1024, 1),
            nn.ReLU(inplace=True)
        ]
        self.features = nn.Sequential(*layers)
        if not all(0 <= i < len(layers) for i in out_feature_indices):
            raise ValueError(
                f'SSDVGG: out_feature_indices {out_feature_indices} must '
                f'lie in [0, {len(layers) - 1}] for depth {depth}')
        self.out_feature_indices = tuple(out_feature_indices)

    def forward(self, x):
        """x: (B, 3, H, W) -> tuple of the selected feature maps."""
        outs = []
        for i, layer in enumerate(self.features):
            x = layer(x)
            if i in self.out_feature_indices:
                outs.append(x)
        return outs[0] if len(outs) == 1 else tuple(outs)
