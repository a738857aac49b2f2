"""SSD neck: L2-normalise the first backbone map and grow extra, coarser
levels from the last one (SSD300, SSD512, SSDLite)."""
import torch
import torch.nn as nn
from mmengine.model import BaseModule

from detkit.registry import MODELS
from ..layers import ConvModule, DepthwiseSeparableConvModule


class L2Norm(nn.Module):
    """``y[:, c] = weight[c] * x[:, c] / (||x||_2 over channels + eps)``.

    conv4_3 of VGG has a much larger scale than the deeper maps; the learned
    per-channel ``weight`` (starting at ``scale``) rescales it (ParseNet).
    The norm is computed in float32 so that fp16 inputs do not overflow.
    """

    def __init__(self, n_dims, scale=20., eps=1e-10):
        super().__init__()
        self.n_dims = n_dims
        self.scale = scale
        self.eps = eps
        self.weight = nn.Parameter(torch.full((n_dims, ), float(scale)))

    def forward(self, x):
        """x: (B, n_dims, H, W) -> same shape and dtype."""
        x32 = x.float()
        norm = x32.pow(2).sum(1, keepdim=True).sqrt() + self.eps
        return (self.weight.float()[None, :, None, None] * x32 /
                norm).type_as(x)


@MODELS.register_module()
class SSDNeck(BaseModule):
    """Pass the backbone maps through and append one map per extra level.

    Extra level i is ``nn.Sequential(ConvModule 1x1 -> out/2,
    second conv k x k stride s_i pad p_i -> out)`` applied to the previous
    level, where the second conv is a ConvModule, or with ``use_depthwise``
    a depthwise-separable one (SSDLite); ``k = last_kernel_size`` for the
    last level, 3 otherwise. A level of size n becomes
    ``floor((n + 2 p - k) / s) + 1``: SSD300 19 -> 10, 5, 3, 1; SSD512 32 ->
    16, 8, 4, 2, 1; SSDLite-320 10 -> 5, 3, 2, 1.

    Input: tuple of ``len(in_channels)`` maps (B, in_channels[i], H_i, W_i).
    Output: tuple of ``len(out_channels)`` maps (B, out_channels[i], h, w).

    Args:
        in_channels: channels of the backbone maps; they must be the first
            entries of ``out_channels``.
        out_channels: channels of every output level.
        level_strides / level_paddings: per extra level.
        l2_norm_scale: initial L2Norm weight on the first map; None or 0
            for no L2Norm.
    """

    def __init__(self,
                 in_channels,
                 out_channels,
                 level_strides,
                 level_paddings,
                 l2_norm_scale=20.,
                 last_kernel_size=3,
                 use_depthwise=False,
                 conv_cfg=None,
                 norm_cfg=None,
                 act_cfg=dict(type='ReLU'),
                 init_cfg=[
                     dict(
                         type='Xavier', distribution='uniform',
                         layer='Conv2d'),
                     dict(type='Constant', val=1, layer='BatchNorm2d'),
                 ]):
        in_channels, out_channels = list(in_channels), list(out_channels)
        num_extra = len(out_channels) - len(in_channels)
        if num_extra <= 0 or out_channels[:len(in_channels)] != in_channels:
            raise ValueError(
                f'SSDNeck: out_channels {out_channels} must start with '
                f'in_channels {in_channels} and add at least one level')
        if not len(level_strides) == len(level_paddings) == num_extra:
            raise ValueError(
                f'SSDNeck: level_strides {level_strides} and '
                f'level_paddings {level_paddings} need one entry per extra '
                f'level ({num_extra} = len(out_channels) - len(in_channels))')
        init_cfg = [init_cfg] if isinstance(init_cfg, dict) else list(
            init_cfg or [])
        if l2_norm_scale:
            # Constant init keeps the L2Norm weight at its scale through
            # init_weights.
            init_cfg.append(
                dict(type='Constant', val=l2_norm_scale,
                     override=dict(name='l2_norm')))
        super().__init__(init_cfg)
        if l2_norm_scale:
            self.l2_norm = L2Norm(in_channels[0], l2_norm_scale)

        second_conv = (DepthwiseSeparableConvModule
                       if use_depthwise else ConvModule)
        cfgs = dict(conv_cfg=conv_cfg, norm_cfg=norm_cfg, act_cfg=act_cfg)
        self.extra_layers = nn.ModuleList()
        prev = in_channels[-1]
        for i, (out_ch, stride, padding) in enumerate(
                zip(out_channels[len(in_channels):], level_strides,
                    level_paddings)):
            kernel = last_kernel_size if i == num_extra - 1 else 3
            self.extra_layers.append(
                nn.Sequential(
                    ConvModule(prev, out_ch // 2, 1, **cfgs),
                    second_conv(out_ch // 2, out_ch, kernel, stride=stride,
                                padding=padding, **cfgs)))
            prev = out_ch

    def forward(self, inputs):
        """inputs: tuple of (B, in_channels[i], H_i, W_i) -> tuple of
        (B, out_channels[i], h_i, w_i)."""
        outs = list(inputs)
        if hasattr(self, 'l2_norm'):
            outs[0] = self.l2_norm(outs[0])
        feat = outs[-1]
        for layer in self.extra_layers:
            feat = layer(feat)
            outs.append(feat)
        return tuple(outs)
