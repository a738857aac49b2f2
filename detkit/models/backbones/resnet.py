"""ResNet backbone (He et al., 2016) with mmdetection's names and options.

Parameter names follow torchvision / mmdetection (``conv1``, ``bn1``,
``layer1.0.conv1``, ``layer1.0.downsample.0``, ...), so both torchvision's
ImageNet weights (``torchvision://resnet50``) and mmdetection checkpoints
load without renaming.
"""
import warnings

import torch.nn as nn
from mmengine.model import BaseModule
from torch.nn.modules.batchnorm import _BatchNorm
from torch.utils.checkpoint import checkpoint

from detkit.registry import MODELS
from ..layers import build_norm_layer


def _conv(conv_cfg, in_channels, out_channels, kernel_size, **kwargs):
    """A bias-free ``nn.Conv2d``; ``conv_cfg`` may only name plain Conv2d
    (detkit has no compiled conv variants such as DCN)."""
    if conv_cfg is not None and conv_cfg.get('type', 'Conv2d') not in (
            'Conv2d', 'Conv'):
        raise KeyError(f'ResNet conv_cfg type {conv_cfg["type"]!r} is not '
                       "supported; use conv_cfg=None or dict(type='Conv2d')")
    return nn.Conv2d(
        in_channels, out_channels, kernel_size, bias=False, **kwargs)


class _ResBlock(nn.Module):
    """What BasicBlock and Bottleneck share: the residual sum, the final
    ReLU and gradient checkpointing (``with_cp``) of everything before it."""

    def forward(self, x):
        """x: (B, inplanes, H, W) -> (B, planes * expansion, H/s, W/s)."""

        def residual_sum(x):
            identity = x if self.downsample is None else self.downsample(x)
            return self._branch(x) + identity

        if self.with_cp and x.requires_grad:
            # Recompute the block in backward instead of storing its
            # activations: less memory, one more forward per block.
            out = checkpoint(residual_sum, x, use_reentrant=False)
        else:
            out = residual_sum(x)
        return self.relu(out)

    @property
    def last_norm(self):
        """The norm whose weight ``zero_init_residual`` sets to 0, so that
        the block starts as the identity."""
        return getattr(self, self.last_norm_name)


class BasicBlock(_ResBlock):
    """Two 3x3 convs (ResNet-18/34). ``style`` has no effect here."""

    expansion = 1

    def __init__(self,
                 inplanes,
                 planes,
                 stride=1,
                 dilation=1,
                 downsample=None,
                 style='pytorch',
                 with_cp=False,
                 conv_cfg=None,
                 norm_cfg=dict(type='BN')):
        super().__init__()
        self.with_cp = with_cp
        self.conv1 = _conv(conv_cfg, inplanes, planes, 3, stride=stride,
                           padding=dilation, dilation=dilation)
        self.norm1_name, norm1 = build_norm_layer(norm_cfg, planes, 1)
        self.add_module(self.norm1_name, norm1)
        self.conv2 = _conv(conv_cfg, planes, planes, 3, padding=1)
        self.norm2_name, norm2 = build_norm_layer(norm_cfg, planes, 2)
        self.add_module(self.norm2_name, norm2)
        self.last_norm_name = self.norm2_name
        self.relu = nn.ReLU(inplace=True)
        self.downsample = downsample

    def _branch(self, x):
        out = self.relu(getattr(self, self.norm1_name)(self.conv1(x)))
        return getattr(self, self.norm2_name)(self.conv2(out))


class Bottleneck(_ResBlock):
    """1x1 reduce -> 3x3 -> 1x1 expand (x4) (ResNet-50/101/152).

    ``style='pytorch'`` puts the stride on the 3x3 conv, ``'caffe'`` on the
    first 1x1 (the layout of the original Caffe/Detectron weights).
    ``width`` (default ``planes``) is the channel count of the first two
    convs and ``groups`` that of the 3x3 conv; ResNeXt sets both (see
    :mod:`detkit.models.backbones.resnext`).
    """

    expansion = 4

    def __init__(self,
                 inplanes,
                 planes,
                 stride=1,
                 dilation=1,
                 downsample=None,
                 style='pytorch',
                 with_cp=False,
                 conv_cfg=None,
                 norm_cfg=dict(type='BN'),
                 groups=1,
                 width=None):
        super().__init__()
        if style not in ('pytorch', 'caffe'):
            raise ValueError(f"ResNet style must be 'pytorch' or 'caffe', "
                             f'got {style!r}')
        stride1, stride2 = (1, stride) if style == 'pytorch' else (stride, 1)
        width = planes if width is None else width
        self.with_cp = with_cp
        self.conv1 = _conv(conv_cfg, inplanes, width, 1, stride=stride1)
        self.norm1_name, norm1 = build_norm_layer(norm_cfg, width, 1)
        self.add_module(self.norm1_name, norm1)
        self.conv2 = _conv(conv_cfg, width, width, 3, stride=stride2,
                           padding=dilation, dilation=dilation,
                           groups=groups)
        self.norm2_name, norm2 = build_norm_layer(norm_cfg, width, 2)
        self.add_module(self.norm2_name, norm2)
        self.conv3 = _conv(conv_cfg, width, planes * self.expansion, 1)
        self.norm3_name, norm3 = build_norm_layer(
            norm_cfg, planes * self.expansion, 3)
        self.add_module(self.norm3_name, norm3)
        self.last_norm_name = self.norm3_name
        self.relu = nn.ReLU(inplace=True)
        self.downsample = downsample

    def _branch(self, x):
        out = self.relu(getattr(self, self.norm1_name)(self.conv1(x)))
        out = self.relu(getattr(self, self.norm2_name)(self.conv2(out)))
        return getattr(self, self.norm3_name)(self.conv3(out))


def make_res_layer(block, inplanes, planes, num_blocks, stride=1,
                   dilation=1, avg_down=False, conv_cfg=None,
                   norm_cfg=dict(type='BN'), **block_kwargs):
    """One stage: ``num_blocks`` blocks, the first one strided and with a
    projection shortcut ``downsample`` when the shape changes.

    ``downsample`` is ``[conv 1x1 stride s, norm]``; with ``avg_down`` it is
    ``[AvgPool s x s, conv 1x1, norm]`` (ResNet-D), so the keys shift by one.
    """
    out_channels = planes * block.expansion
    downsample = None
    if stride != 1 or inplanes != out_channels:
        layers = []
        conv_stride = stride
        if avg_down:
            conv_stride = 1
            layers.append(
                nn.AvgPool2d(stride, stride, ceil_mode=True,
                             count_include_pad=False))
        layers += [
            _conv(conv_cfg, inplanes, out_channels, 1, stride=conv_stride),
            build_norm_layer(norm_cfg, out_channels)[1]
        ]
        downsample = nn.Sequential(*layers)
    kwargs = dict(conv_cfg=conv_cfg, norm_cfg=norm_cfg, **block_kwargs)
    blocks = [block(inplanes, planes, stride, dilation, downsample, **kwargs)]
    blocks += [
        block(out_channels, planes, 1, dilation, **kwargs)
        for _ in range(1, num_blocks)
    ]
    return nn.Sequential(*blocks)


@MODELS.register_module()
class ResNet(BaseModule):
    """ResNet-18/34/50/101/152.

    Input (B, in_channels, H, W); output a tuple with one map per index in
    ``out_indices``: stage i has ``base_channels * 2**i * expansion``
    channels and stride ``4 * prod(strides[:i + 1])`` (4, 8, 16, 32 with the
    defaults), each size being the conv arithmetic ceil of H / stride.

    Args:
        frozen_stages: -1 freezes nothing, 0 the stem, k the stem and
            ``layer1..layerk`` (eval mode, ``requires_grad=False``, kept so
            through ``train()``).
        norm_eval: keep every BatchNorm in eval mode during training (frozen
            running statistics; the affine weights still learn unless
            frozen).
        zero_init_residual: with the default init, zero the last norm of
            each block (ignored when ``init_cfg``/``pretrained`` is given).
        pretrained: deprecated alias for ``init_cfg=dict(type='Pretrained',
            checkpoint=pretrained)``.
        dcn, stage_with_dcn, plugins: accepted so that mmdetection configs
            that spell out the defaults build; anything else is refused
            (DCN and plugins need compiled ops that detkit does not ship).
    """

    arch_settings = {
        18: (BasicBlock, (2, 2, 2, 2)),
        34: (BasicBlock, (3, 4, 6, 3)),
        50: (Bottleneck, (3, 4, 6, 3)),
        101: (Bottleneck, (3, 4, 23, 3)),
        152: (Bottleneck, (3, 8, 36, 3))
    }

    def __init__(self,
                 depth,
                 in_channels=3,
                 stem_channels=None,
                 base_channels=64,
                 num_stages=4,
                 strides=(1, 2, 2, 2),
                 dilations=(1, 1, 1, 1),
                 out_indices=(0, 1, 2, 3),
                 style='pytorch',
                 deep_stem=False,
                 avg_down=False,
                 frozen_stages=-1,
                 conv_cfg=None,
                 norm_cfg=dict(type='BN', requires_grad=True),
                 norm_eval=True,
                 dcn=None,
                 stage_with_dcn=(False, False, False, False),
                 plugins=None,
                 with_cp=False,
                 zero_init_residual=True,
                 pretrained=None,
                 init_cfg=None):
        if depth not in self.arch_settings:
            raise KeyError(f'ResNet: invalid depth {depth}; choose one of '
                           f'{sorted(self.arch_settings)}')
        if init_cfg is not None and pretrained is not None:
            raise ValueError('ResNet: give init_cfg or pretrained, not both '
                             '(pretrained is deprecated; use init_cfg=dict('
                             "type='Pretrained', checkpoint=...))")
        if dcn is not None or plugins:
            raise NotImplementedError(
                'ResNet: dcn and plugins are not supported by detkit (they '
                'need compiled ops); remove them from the backbone config')
        if not 1 <= num_stages <= 4:
            raise ValueError(f'ResNet: num_stages must be 1..4, got '
                             f'{num_stages}')
        if len(strides) != num_stages or len(dilations) != num_stages:
            raise ValueError(
                f'ResNet: strides {strides} and dilations {dilations} need '
                f'one entry per stage (num_stages={num_stages})')
        if not all(0 <= i < num_stages for i in out_indices):
            raise ValueError(f'ResNet: out_indices {out_indices} must lie '
                             f'in [0, {num_stages - 1}]')
        if not -1 <= frozen_stages <= num_stages:
            raise ValueError(f'ResNet: frozen_stages must be in [-1, '
                             f'{num_stages}], got {frozen_stages}')
        if pretrained is not None:
            warnings.warn('ResNet: `pretrained` is deprecated, use '
                          "init_cfg=dict(type='Pretrained', checkpoint=...)")
            init_cfg = dict(type='Pretrained', checkpoint=pretrained)
        # mmdetection's default: Kaiming convs, norms 1/0, then (below, in
        # init_weights) the zero-init of each block's last norm.
        self._zero_init_last_norm = init_cfg is None and zero_init_residual
        if init_cfg is None:
            init_cfg = [
                dict(type='Kaiming', layer='Conv2d'),
                dict(type='Constant', val=1,
                     layer=['_BatchNorm', 'GroupNorm'])
            ]
        super().__init__(init_cfg)
        self.depth = depth
        self.out_indices = tuple(out_indices)
        self.deep_stem = deep_stem
        self.frozen_stages = frozen_stages
        self.norm_eval = norm_eval
        self.zero_init_residual = zero_init_residual
        stem_channels = stem_channels or base_channels
        self.base_channels = base_channels
        self.block, stage_blocks = self.arch_settings[depth]

        self._make_stem(in_channels, stem_channels, conv_cfg, norm_cfg)
        self.maxpool = nn.MaxPool2d(kernel_size=3, stride=2, padding=1)
        self.res_layers = []
        inplanes = stem_channels
        for i, num_blocks in enumerate(stage_blocks[:num_stages]):
            planes = base_channels * 2**i
            layer = make_res_layer(
                self.block, inplanes, planes, num_blocks, strides[i],
                dilations[i], avg_down=avg_down, conv_cfg=conv_cfg,
                norm_cfg=norm_cfg, style=style, with_cp=with_cp,
                **self._block_kwargs(planes))
            inplanes = planes * self.block.expansion
            self.add_module(f'layer{i + 1}', layer)
            self.res_layers.append(f'layer{i + 1}')
        self.feat_dim = inplanes
        self._freeze_stages()

    def _block_kwargs(self, planes):
        """Extra block arguments of a stage with ``planes`` (none here;
        ResNeXt adds its group width)."""
        return {}

    def _make_stem(self, in_channels, stem_channels, conv_cfg, norm_cfg):
        """7x7/2 conv (``conv1``, ``bn1``) or, with ``deep_stem``, three 3x3
        convs in ``stem`` (ResNet-C)."""
        if self.deep_stem:
            chans = [in_channels, stem_channels // 2, stem_channels // 2,
                     stem_channels]
            layers = []
            for i in range(3):
                layers += [
                    _conv(conv_cfg, chans[i], chans[i + 1], 3,
                          stride=2 if i == 0 else 1, padding=1),
                    build_norm_layer(norm_cfg, chans[i + 1])[1],
                    nn.ReLU(inplace=True)
                ]
            self.stem = nn.Sequential(*layers)
        else:
            self.conv1 = _conv(conv_cfg, in_channels, stem_channels, 7,
                               stride=2, padding=3)
            self.norm1_name, norm1 = build_norm_layer(norm_cfg,
                                                      stem_channels, 1)
            self.add_module(self.norm1_name, norm1)
            self.relu = nn.ReLU(inplace=True)

    @property
    def norm1(self):
        return getattr(self, self.norm1_name)

    def _frozen_modules(self):
        if self.frozen_stages < 0:
            return []
        stem = [self.stem] if self.deep_stem else [self.conv1, self.norm1]
        return stem + [
            getattr(self, f'layer{i}')
            for i in range(1, self.frozen_stages + 1)
        ]

    def _freeze_stages(self):
        for module in self._frozen_modules():
            module.eval()
            for param in module.parameters():
                param.requires_grad = False

    def init_weights(self):
        first_time = not self._is_init
        super().init_weights()
        if first_time and self._zero_init_last_norm:
            for m in self.modules():
                if isinstance(m, _ResBlock):
                    nn.init.constant_(m.last_norm.weight, 0)
                    nn.init.constant_(m.last_norm.bias, 0)

    def train(self, mode=True):
        """Switch mode, then re-apply frozen stages and ``norm_eval``
        (``nn.Module.train`` would otherwise put them back in training)."""
        super().train(mode)
        self._freeze_stages()
        if mode and self.norm_eval:
            for m in self.modules():
                if isinstance(m, _BatchNorm):
                    m.eval()
        return self

    def forward(self, x):
        """x: (B, in_channels, H, W) -> tuple of (B, C_i, H_i, W_i)."""
        if self.deep_stem:
            x = self.stem(x)
        else:
            x = self.relu(self.norm1(self.conv1(x)))
        x = self.maxpool(x)
        outs = []
        for i, name in enumerate(self.res_layers):
            x = getattr(self, name)(x)
            if i in self.out_indices:
                outs.append(x)
        return tuple(outs)
