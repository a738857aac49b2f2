"""MobileNetV2 backbone (Sandler et al., 2018) with mmdetection's layout:
``conv1``, ``layer1..layer7`` of inverted residual blocks and ``conv2``."""
import torch.nn as nn
from mmengine.model import BaseModule
from torch.nn.modules.batchnorm import _BatchNorm
from torch.utils.checkpoint import checkpoint

from detkit.registry import MODELS
from ..layers import ConvModule


def make_divisible(value, divisor, min_value=None, min_ratio=0.9):
    """Round ``value`` to the nearest multiple of ``divisor`` (at least
    ``min_value``), going one step up if rounding lost more than
    ``1 - min_ratio`` of it. Keeps channel counts hardware friendly."""
    min_value = divisor if min_value is None else min_value
    new_value = max(min_value, int(value + divisor / 2) // divisor * divisor)
    if new_value < min_ratio * value:
        new_value += divisor
    return new_value


class InvertedResidual(nn.Module):
    """``expand_conv`` 1x1 (omitted when ``mid == in``) -> ``depthwise_conv``
    3x3 stride s -> ``linear_conv`` 1x1 without activation, plus the input
    when the shape is unchanged.

    x: (B, in, H, W) -> (B, out, ceil(H / s), ceil(W / s)).
    """

    def __init__(self, in_channels, out_channels, stride, mid_channels,
                 conv_cfg=None, norm_cfg=dict(type='BN'),
                 act_cfg=dict(type='ReLU6'), with_cp=False):
        super().__init__()
        if stride not in (1, 2):
            raise ValueError(f'InvertedResidual: stride must be 1 or 2, got '
                             f'{stride}')
        self.with_cp = with_cp
        self.with_res_shortcut = stride == 1 and in_channels == out_channels
        cfgs = dict(conv_cfg=conv_cfg, norm_cfg=norm_cfg)
        if mid_channels != in_channels:
            self.expand_conv = ConvModule(in_channels, mid_channels, 1,
                                          act_cfg=act_cfg, **cfgs)
        self.depthwise_conv = ConvModule(
            mid_channels, mid_channels, 3, stride=stride, padding=1,
            groups=mid_channels, act_cfg=act_cfg, **cfgs)
        self.linear_conv = ConvModule(mid_channels, out_channels, 1,
                                      act_cfg=None, **cfgs)

    def _forward(self, x):
        out = self.expand_conv(x) if hasattr(self, 'expand_conv') else x
        out = self.linear_conv(self.depthwise_conv(out))
        return x + out if self.with_res_shortcut else out

    def forward(self, x):
        if self.with_cp and x.requires_grad:
            return checkpoint(self._forward, x, use_reentrant=False)
        return self._forward(x)


@MODELS.register_module()
class MobileNetV2(BaseModule):
    """MobileNetV2. Output index i in 0..6 is ``layer{i+1}``, 7 is ``conv2``.

    With ``widen_factor=1``, layer1..7 have 16, 24, 32, 64, 96, 160, 320
    channels at strides 2, 4, 8, 16, 16, 32, 32, and conv2 1280 channels at
    stride 32 (``int(1280 * widen_factor)`` when widened). Input (B, 3, H, W);
    output a tuple of (B, C_i, H_i, W_i) with H_i = ceil(H / stride_i).

    Args:
        frozen_stages: -1 nothing, 0 ``conv1``, k ``conv1`` and
            ``layer1..layerk`` (eval mode, no gradient).
        norm_eval: keep every BatchNorm in eval mode during training.
        with_cp: gradient checkpointing of each block.
    """

    # expand ratio, channels, blocks, stride of the first block
    arch_settings = [[1, 16, 1, 1], [6, 24, 2, 2], [6, 32, 3, 2],
                     [6, 64, 4, 2], [6, 96, 3, 1], [6, 160, 3, 2],
                     [6, 320, 1, 1]]

    def __init__(self,
                 widen_factor=1.,
                 out_indices=(1, 2, 4, 7),
                 frozen_stages=-1,
                 conv_cfg=None,
                 norm_cfg=dict(type='BN'),
                 act_cfg=dict(type='ReLU6'),
                 norm_eval=False,
                 with_cp=False,
                 pretrained=None,
                 init_cfg=None):
        if init_cfg is not None and pretrained is not None:
            raise ValueError('MobileNetV2: give init_cfg or pretrained, not '
                             'both')
        if pretrained is not None:
            init_cfg = dict(type='Pretrained', checkpoint=pretrained)
        elif init_cfg is None:
            init_cfg = [
                dict(type='Kaiming', layer='Conv2d'),
                dict(type='Constant', val=1,
                     layer=['_BatchNorm', 'GroupNorm'])
            ]
        super().__init__(init_cfg)
        if not set(out_indices) <= set(range(8)):
            raise ValueError(f'MobileNetV2: out_indices {out_indices} must '
                             'lie in [0, 7] (7 = conv2)')
        if frozen_stages not in range(-1, 8):
            raise ValueError(f'MobileNetV2: frozen_stages must be in '
                             f'[-1, 7], got {frozen_stages}')
        self.out_indices = tuple(out_indices)
        self.frozen_stages = frozen_stages
        self.norm_eval = norm_eval
        cfgs = dict(conv_cfg=conv_cfg, norm_cfg=norm_cfg, act_cfg=act_cfg)

        in_chans = make_divisible(32 * widen_factor, 8)
        self.conv1 = ConvModule(3, in_chans, 3, stride=2, padding=1, **cfgs)
        self.layers = []
        for i, (ratio, chans, num_blocks, stride) in enumerate(
                self.arch_settings):
            out_chans = make_divisible(chans * widen_factor, 8)
            blocks = []
            for j in range(num_blocks):
                blocks.append(
                    InvertedResidual(
                        in_chans, out_chans, stride if j == 0 else 1,
                        mid_channels=int(round(in_chans * ratio)),
                        with_cp=with_cp, **cfgs))
                in_chans = out_chans
            self.add_module(f'layer{i + 1}', nn.Sequential(*blocks))
            self.layers.append(f'layer{i + 1}')
        # mmdetection widens the last conv only for widen_factor > 1.
        self.out_channel = int(1280 * max(widen_factor, 1.))
        self.conv2 = ConvModule(in_chans, self.out_channel, 1, **cfgs)
        self.layers.append('conv2')
        self._freeze_stages()

    def _freeze_stages(self):
        frozen = [self.conv1] if self.frozen_stages >= 0 else []
        frozen += [
            getattr(self, f'layer{i}')
            for i in range(1, self.frozen_stages + 1)
        ]
        for module in frozen:
            module.eval()
            for param in module.parameters():
                param.requires_grad = False

    def init_weights(self):
        first_time = not self._is_init
        super().init_weights()
        cfgs = self.init_cfg if isinstance(self.init_cfg,
                                           list) else [self.init_cfg]
        if first_time and not any(c.get('type') == 'Pretrained'
                                  for c in cfgs):
            # In mmdetection, conv1 and conv2 are direct children whose
            # ConvModule.init_weights re-runs after init_cfg (the blocks sit
            # in plain nn.Sequentials and are not revisited): Kaiming
            # fan_out normal for their convs, 1/0 for their norms. Do the
            # same so that training from scratch starts alike.
            for module in (self.conv1, self.conv2):
                nn.init.kaiming_normal_(module.conv.weight, mode='fan_out',
                                        nonlinearity='relu')
                if module.conv.bias is not None:
                    nn.init.zeros_(module.conv.bias)
                if module.norm is not None:
                    nn.init.ones_(module.norm.weight)
                    nn.init.zeros_(module.norm.bias)

    def train(self, mode=True):
        """Switch mode, then re-apply frozen stages and ``norm_eval``."""
        super().train(mode)
        self._freeze_stages()
        if mode and self.norm_eval:
            for m in self.modules():
                if isinstance(m, _BatchNorm):
                    m.eval()
        return self

    def forward(self, x):
        """x: (B, 3, H, W) -> tuple of (B, C_i, H_i, W_i) for out_indices."""
        x = self.conv1(x)
        outs = []
        for i, name in enumerate(self.layers):
            x = getattr(self, name)(x)
            if i in self.out_indices:
                outs.append(x)
        return tuple(outs)
