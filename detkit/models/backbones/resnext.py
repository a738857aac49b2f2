"""ResNeXt backbone (Xie et al., 2017): ResNet with grouped 3x3 convs.

A ResNeXt "GxWd" (32x4d, 64x4d, 32x8d) splits each Bottleneck's 3x3 conv
into ``groups = G`` groups of ``base_width = W`` channels at the first
stage. The width of a stage's first two convs is

    width = floor(planes * base_width / base_channels) * groups

with ``planes = base_channels * 2**i`` for stage ``i``: 32x4d has widths
128, 256, 512, 1024 (the first stage: ``floor(64 * 4 / 64) * 32``), 64x4d
and 32x8d twice that. With ``groups=1`` the block is ResNet's. The
stride, dilation, shortcut, stem, freezing and init rules are ResNet's
(:class:`~detkit.models.backbones.resnet.ResNet`), and so are the
parameter names, so mmdetection's ResNeXt checkpoints and the
``open-mmlab://resnext101_32x4d`` / ``_64x4d`` /
``detectron2/resnext101_32x8d`` ImageNet weights load without renaming.
"""
import math

from detkit.registry import MODELS
from . import resnet
from .resnet import ResNet


def resnext_width(planes: int, groups: int, base_width: int,
                  base_channels: int = 64) -> int:
    """Channels of the grouped 3x3 conv (and of the 1x1 before it)."""
    if groups == 1:
        return planes
    return math.floor(planes * base_width / base_channels) * groups


class Bottleneck(resnet.Bottleneck):
    """ResNet's Bottleneck whose 3x3 conv has ``groups`` groups and whose
    inner width is :func:`resnext_width`; the output stays
    ``planes * 4``."""

    def __init__(self,
                 inplanes,
                 planes,
                 *args,
                 groups=1,
                 base_width=4,
                 base_channels=64,
                 **kwargs):
        """``*args``/``**kwargs``: ResNet Bottleneck's ``stride``,
        ``dilation``, ``downsample``, ``style``, ``with_cp``, ``conv_cfg``,
        ``norm_cfg``."""
        super().__init__(
            inplanes,
            planes,
            *args,
            **kwargs,
            groups=groups,
            width=resnext_width(planes, groups, base_width, base_channels))


@MODELS.register_module()
class ResNeXt(ResNet):
    """ResNeXt-50/101/152.

    Args:
        depth: 50, 101 or 152.
        groups: groups of the 3x3 convs (the "32" of 32x4d).
        base_width: channels per group at the first stage (the "4d").
        **kwargs: every argument of
            :class:`~detkit.models.backbones.resnet.ResNet` (``num_stages``,
            ``strides``, ``dilations``, ``out_indices``, ``style``,
            ``frozen_stages``, ``norm_cfg``, ``norm_eval``, ``init_cfg``,
            ...), with the same defaults.
    """

    arch_settings = {
        50: (Bottleneck, (3, 4, 6, 3)),
        101: (Bottleneck, (3, 4, 23, 3)),
        152: (Bottleneck, (3, 8, 36, 3))
    }

    def __init__(self, depth, groups=1, base_width=4, **kwargs):
        if depth not in self.arch_settings:
            raise KeyError(f'ResNeXt: invalid depth {depth}; choose one of '
                           f'{sorted(self.arch_settings)}')
        if not isinstance(groups, int) or groups < 1:
            raise ValueError(f'ResNeXt: groups must be a positive int, got '
                             f'{groups!r}')
        if not isinstance(base_width, int) or base_width < 1:
            raise ValueError(f'ResNeXt: base_width must be a positive int, '
                             f'got {base_width!r}')
        # Read by _block_kwargs while ResNet.__init__ builds the stages.
        self.groups = groups
        self.base_width = base_width
        super().__init__(depth, **kwargs)

    def _block_kwargs(self, planes):
        return dict(groups=self.groups, base_width=self.base_width,
                    base_channels=self.base_channels)
