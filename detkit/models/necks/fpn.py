"""Feature Pyramid Network (Lin et al., 2017) with mmdetection's options.

Used by RetinaNet (C3-C5 in, P3-P7 out with two stride-2 extra convs) and by
RPN / Faster R-CNN (C2-C5 in, P2-P6 out, P6 by subsampling P5).
"""
import torch.nn as nn
import torch.nn.functional as F
from mmengine.model import BaseModule

from detkit.registry import MODELS
from ..layers import ConvModule

_EXTRA_SOURCES = ('on_input', 'on_lateral', 'on_output')


@MODELS.register_module()
class FPN(BaseModule):
    """Lateral 1x1 convs, a top-down sum with nearest upsampling, a 3x3
    output conv per level, then extra coarser levels up to ``num_outs``.

    Input: a tuple of ``len(in_channels)`` maps ``(B, in_channels[i], H_i,
    W_i)``. Output: a tuple of ``num_outs`` maps ``(B, out_channels, h, w)``
    for backbone levels ``start_level..end_level`` then the extra levels,
    each extra level of size ``ceil(prev / 2)``.

    Args:
        start_level / end_level: first / last backbone level used
            (``end_level=-1``: the last one). With an explicit end level,
            ``num_outs`` must be exactly the number of used levels.
        add_extra_convs: how to make the levels beyond the backbone's.
            ``False``: ``max_pool2d(kernel 1, stride 2)`` of the last output
            (RPN's P6). Otherwise 3x3 stride-2 convs, the first one applied
            to ``'on_input'`` (the last used backbone map; ``True`` means
            this), ``'on_lateral'`` (its lateral) or ``'on_output'`` (its
            output), each next one to the previous extra level.
        relu_before_extra_convs: ReLU before every extra conv but the first.
        no_norm_on_lateral: no norm in the lateral convs even with
            ``norm_cfg``.
        upsample_cfg: kwargs of ``F.interpolate``. Without ``scale_factor``
            the upsampled map takes the lower level's exact size (odd sizes
            included).
    """

    def __init__(self,
                 in_channels,
                 out_channels,
                 num_outs,
                 start_level=0,
                 end_level=-1,
                 add_extra_convs=False,
                 relu_before_extra_convs=False,
                 no_norm_on_lateral=False,
                 conv_cfg=None,
                 norm_cfg=None,
                 act_cfg=None,
                 upsample_cfg=dict(mode='nearest'),
                 init_cfg=dict(
                     type='Xavier', layer='Conv2d', distribution='uniform')):
        super().__init__(init_cfg)
        if not isinstance(in_channels, (list, tuple)):
            raise TypeError(f'FPN in_channels must be a list of ints, got '
                            f'{in_channels!r}')
        self.in_channels = list(in_channels)
        self.out_channels = out_channels
        self.num_ins = len(in_channels)
        self.num_outs = num_outs
        self.relu_before_extra_convs = relu_before_extra_convs
        self.upsample_cfg = dict(upsample_cfg)
        if end_level == -1 or end_level == self.num_ins - 1:
            self.backbone_end_level = self.num_ins  # exclusive
            if num_outs < self.num_ins - start_level:
                raise ValueError(
                    f'FPN num_outs={num_outs} is less than the '
                    f'{self.num_ins - start_level} backbone levels from '
                    f'start_level={start_level}; raise num_outs or '
                    'set end_level')
        else:
            self.backbone_end_level = end_level + 1
            if end_level >= self.num_ins or (num_outs !=
                                             end_level - start_level + 1):
                raise ValueError(
                    f'FPN end_level={end_level} must be < {self.num_ins} '
                    f'and num_outs ({num_outs}) must equal end_level - '
                    f'start_level + 1 = {end_level - start_level + 1}')
        self.start_level = start_level
        self.end_level = end_level
        if add_extra_convs is True:
            add_extra_convs = 'on_input'
        if add_extra_convs and add_extra_convs not in _EXTRA_SOURCES:
            raise ValueError(f'FPN add_extra_convs must be a bool or one of '
                             f'{_EXTRA_SOURCES}, got {add_extra_convs!r}')
        self.add_extra_convs = add_extra_convs

        # inplace=False: the activation must not overwrite a lateral that
        # the top-down sum still reads.
        conv_kwargs = dict(conv_cfg=conv_cfg, act_cfg=act_cfg, inplace=False)
        self.lateral_convs = nn.ModuleList()
        self.fpn_convs = nn.ModuleList()
        for i in range(start_level, self.backbone_end_level):
            self.lateral_convs.append(
                ConvModule(
                    in_channels[i], out_channels, 1,
                    norm_cfg=None if no_norm_on_lateral else norm_cfg,
                    **conv_kwargs))
            self.fpn_convs.append(
                ConvModule(out_channels, out_channels, 3, padding=1,
                           norm_cfg=norm_cfg, **conv_kwargs))
        extra_levels = num_outs - (self.backbone_end_level - start_level)
        if self.add_extra_convs:
            for i in range(extra_levels):
                in_chans = out_channels
                if i == 0 and self.add_extra_convs == 'on_input':
                    in_chans = in_channels[self.backbone_end_level - 1]
                self.fpn_convs.append(
                    ConvModule(in_chans, out_channels, 3, stride=2,
                               padding=1, norm_cfg=norm_cfg, **conv_kwargs))

    def forward(self, inputs):
        """inputs: tuple of (B, in_channels[i], H_i, W_i), fine to coarse.

        Returns:
            tuple of ``num_outs`` (B, out_channels, h_l, w_l).
        """
        if len(inputs) != self.num_ins:
            raise ValueError(f'FPN got {len(inputs)} input maps but was '
                             f'built for {self.num_ins} (in_channels='
                             f'{self.in_channels}); check the backbone '
                             'out_indices')
        laterals = [
            conv(inputs[self.start_level + i])
            for i, conv in enumerate(self.lateral_convs)
        ]
        # Top-down: each coarser (already summed) level flows into the next
        # finer one.
        for i in range(len(laterals) - 1, 0, -1):
            if 'scale_factor' in self.upsample_cfg:
                up = F.interpolate(laterals[i], **self.upsample_cfg)
            else:
                up = F.interpolate(
                    laterals[i], size=laterals[i - 1].shape[2:],
                    **self.upsample_cfg)
            laterals[i - 1] = laterals[i - 1] + up
        num_used = len(laterals)
        outs = [self.fpn_convs[i](laterals[i]) for i in range(num_used)]

        if self.num_outs > num_used and not self.add_extra_convs:
            # kernel 1, stride 2: plain subsampling, size ceil(n / 2).
            for _ in range(self.num_outs - num_used):
                outs.append(F.max_pool2d(outs[-1], 1, stride=2))
        elif self.num_outs > num_used:
            if self.add_extra_convs == 'on_input':
                source = inputs[self.backbone_end_level - 1]
            elif self.add_extra_convs == 'on_lateral':
                source = laterals[-1]
            else:  # 'on_output'
                source = outs[-1]
            outs.append(self.fpn_convs[num_used](source))
            for i in range(num_used + 1, self.num_outs):
                x = outs[-1]
                if self.relu_before_extra_convs:
                    x = F.relu(x)
                outs.append(self.fpn_convs[i](x))
        return tuple(outs)
