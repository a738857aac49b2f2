"""One ResNet stage run on every pooled RoI: the shared head of the "C4"
Faster R-CNN (docs/faster_rcnn.md#c4).

The backbone stops after stage 3 (C4, stride 16); RoIAlign pools 14 x 14
from C4 and stage 4 (``layer4``: three bottlenecks, stride 2, 1024 -> 2048
channels for ResNet-50) turns each RoI into ``(2048, 7, 7)``. The stage is
registered as ``layer{stage + 1}``, the name it has in a ResNet, so that a
backbone checkpoint's ``layer4.*`` weights load into it: mmdetection's C4
configs give the shared head the backbone's own ``Pretrained`` checkpoint,
and the loader (``strict=False``) keeps the ``layer4.*`` entries and skips
the rest.
"""
import warnings

from mmengine.model import BaseModule
from torch import Tensor
from torch.nn.modules.batchnorm import _BatchNorm

from ....registry import MODELS
from ...backbones.resnet import ResNet, make_res_layer


@MODELS.register_module()
class ResLayer(BaseModule):
    """ResNet stage ``stage`` (0-based: 3 is ``layer4``) as a module.

    Input ``(R, C_in, h, w)`` with ``C_in = 64 * 2**(stage - 1) *
    expansion`` (1024 for stage 3 of ResNet-50); output ``(R, 64 * 2**stage
    * expansion, ceil(h / stride), ceil(w / stride))``.

    Args:
        depth: 18, 34, 50, 101 or 152 (the block type and block count).
        stage: which stage, 1..3 (stage 0 follows the stem, not a stage).
        stride, dilation: of the stage's first block / of its 3x3 convs.
        style: ``'pytorch'`` (stride on the 3x3 conv) or ``'caffe'`` (on
            the first 1x1).
        norm_cfg: norm layers (``requires_grad=False`` freezes their affine
            weights).
        norm_eval: keep every BatchNorm in eval mode during training.
        with_cp: gradient checkpointing of each block.
        dcn: must be None (deformable convs need compiled ops).
        pretrained: deprecated alias for ``init_cfg=dict(type='Pretrained',
            checkpoint=pretrained)``.
        init_cfg: default Kaiming convs, norms weight 1 / bias 0.
    """

    def __init__(self,
                 depth: int,
                 stage: int = 3,
                 stride: int = 2,
                 dilation: int = 1,
                 style: str = 'pytorch',
                 norm_cfg: dict = dict(type='BN', requires_grad=True),
                 norm_eval: bool = True,
                 with_cp: bool = False,
                 dcn=None,
                 pretrained=None,
                 init_cfg=None):
        if depth not in ResNet.arch_settings:
            raise KeyError(f'ResLayer: invalid depth {depth}; choose one of '
                           f'{sorted(ResNet.arch_settings)}')
        if not 1 <= stage <= 3:
            raise ValueError(f'ResLayer: stage must be 1, 2 or 3 (0-based; '
                             f'3 is layer4), got {stage}')
        if dcn is not None:
            raise NotImplementedError(
                'ResLayer: dcn is not supported by detkit (deformable convs '
                'need compiled ops); remove dcn from '
                'model.roi_head.shared_head')
        if init_cfg is not None and pretrained is not None:
            raise ValueError('ResLayer: give init_cfg or pretrained, not both '
                             '(pretrained is deprecated; use init_cfg=dict('
                             "type='Pretrained', checkpoint=...))")
        if pretrained is not None:
            if not isinstance(pretrained, str):
                raise TypeError('ResLayer: pretrained must be a checkpoint '
                                f'path or name (str) or None, got '
                                f'{type(pretrained).__name__}')
            warnings.warn('ResLayer: `pretrained` is deprecated, use '
                          "init_cfg=dict(type='Pretrained', checkpoint=...)")
            init_cfg = dict(type='Pretrained', checkpoint=pretrained)
        if init_cfg is None:
            init_cfg = [
                dict(type='Kaiming', layer='Conv2d'),
                dict(type='Constant', val=1,
                     layer=['_BatchNorm', 'GroupNorm'])
            ]
        super().__init__(init_cfg)
        self.stage = stage
        self.norm_eval = norm_eval
        block, stage_blocks = ResNet.arch_settings[depth]
        planes = 64 * 2**stage
        inplanes = planes // 2 * block.expansion
        self.add_module(
            f'layer{stage + 1}',
            make_res_layer(block, inplanes, planes, stage_blocks[stage],
                           stride, dilation, norm_cfg=norm_cfg, style=style,
                           with_cp=with_cp))

    def forward(self, x: Tensor) -> Tensor:
        """``(R, C_in, h, w)`` -> ``(R, C_out, h / stride, w / stride)``."""
        return getattr(self, f'layer{self.stage + 1}')(x)

    def train(self, mode: bool = True):
        """Switch mode, keeping BatchNorm in eval mode with ``norm_eval``
        (frozen running statistics)."""
        super().train(mode)
        if mode and self.norm_eval:
            for m in self.modules():
                if isinstance(m, _BatchNorm):
                    m.eval()
        return self
