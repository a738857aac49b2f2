"""Box heads built of shared convs / fcs followed by separate classification
and regression branches (mmdetection's ``ConvFCBBoxHead`` layout)::

                                /-> cls convs -> cls fcs -> fc_cls
    shared convs -> shared fcs
                                \\-> reg convs -> reg fcs -> fc_reg

Faster R-CNN's ``Shared2FCBBoxHead`` is two shared fcs of 1024 (each with
ReLU) and nothing else: ``(R, 256, 7, 7)`` -> flatten (C, H, W order) to
12544 -> 1024 -> 1024 -> ``fc_cls`` / ``fc_reg``.
"""
from typing import Optional, Tuple

import torch.nn as nn
from torch import Tensor

from ....registry import MODELS
from ...layers import ConvModule
from .bbox_head import BBoxHead


@MODELS.register_module()
class ConvFCBBoxHead(BBoxHead):
    """Configurable conv / fc box head.

    Args:
        num_shared_convs, num_shared_fcs: layers of the shared trunk.
        num_cls_convs, num_cls_fcs: layers of the classification branch.
        num_reg_convs, num_reg_fcs: layers of the regression branch.
        conv_out_channels: channels of every 3x3 conv.
        fc_out_channels: width of every fc.
        conv_cfg, norm_cfg: of the convs.
        **kwargs: :class:`BBoxHead` arguments.

    Branch convs need ``num_shared_fcs=0`` (they work on feature maps).
    """

    def __init__(self,
                 num_shared_convs: int = 0,
                 num_shared_fcs: int = 0,
                 num_cls_convs: int = 0,
                 num_cls_fcs: int = 0,
                 num_reg_convs: int = 0,
                 num_reg_fcs: int = 0,
                 conv_out_channels: int = 256,
                 fc_out_channels: int = 1024,
                 conv_cfg: Optional[dict] = None,
                 norm_cfg: Optional[dict] = None,
                 init_cfg=None,
                 *args,
                 **kwargs):
        layers = (num_shared_convs, num_shared_fcs, num_cls_convs,
                  num_cls_fcs, num_reg_convs, num_reg_fcs)
        if sum(layers) == 0:
            raise ValueError('ConvFCBBoxHead: every num_*_convs / num_*_fcs '
                             'is 0; use BBoxHead for a head without layers')
        if (num_cls_convs > 0 or num_reg_convs > 0) and num_shared_fcs > 0:
            raise ValueError('ConvFCBBoxHead: num_cls_convs / num_reg_convs '
                             'need num_shared_fcs=0 (convs cannot follow '
                             'fcs)')
        self.num_shared_convs, self.num_shared_fcs = layers[:2]
        self.num_cls_convs, self.num_cls_fcs = layers[2:4]
        self.num_reg_convs, self.num_reg_fcs = layers[4:]
        self.conv_out_channels = conv_out_channels
        self.fc_out_channels = fc_out_channels
        self.conv_cfg = conv_cfg
        self.norm_cfg = norm_cfg
        super().__init__(*args, init_cfg=init_cfg, **kwargs)
        if not self.with_cls and (num_cls_convs or num_cls_fcs):
            raise ValueError('ConvFCBBoxHead: cls branch layers need '
                             'with_cls=True')
        if not self.with_reg and (num_reg_convs or num_reg_fcs):
            raise ValueError('ConvFCBBoxHead: reg branch layers need '
                             'with_reg=True')
        if init_cfg is None:
            self.init_cfg.append(
                dict(
                    type='Xavier',
                    distribution='uniform',
                    override=[
                        dict(name='shared_fcs'),
                        dict(name='cls_fcs'),
                        dict(name='reg_fcs')
                    ]))

    def _init_layers(self) -> None:
        if self.with_avg_pool:
            self.avg_pool = nn.AvgPool2d(self.roi_feat_size)
        self.shared_convs, self.shared_fcs, shared_dim = self._branch(
            self.num_shared_convs, self.num_shared_fcs, self.in_channels,
            is_shared=True)
        self.cls_convs, self.cls_fcs, cls_dim = self._branch(
            self.num_cls_convs, self.num_cls_fcs, shared_dim)
        self.reg_convs, self.reg_fcs, reg_dim = self._branch(
            self.num_reg_convs, self.num_reg_fcs, shared_dim)
        if self.num_shared_fcs == 0 and not self.with_avg_pool:
            # Branches without fcs end on a feature map that is flattened.
            if self.num_cls_fcs == 0:
                cls_dim *= self.roi_feat_area
            if self.num_reg_fcs == 0:
                reg_dim *= self.roi_feat_area
        self.relu = nn.ReLU(inplace=True)
        self._init_predictors(cls_dim, reg_dim)

    def _branch(self, num_convs: int, num_fcs: int, in_channels: int,
                is_shared: bool = False
                ) -> Tuple[nn.ModuleList, nn.ModuleList, int]:
        """Convs then fcs of one branch, and its output width."""
        dim = in_channels
        convs = nn.ModuleList()
        for i in range(num_convs):
            convs.append(
                ConvModule(
                    dim if i == 0 else self.conv_out_channels,
                    self.conv_out_channels,
                    3,
                    padding=1,
                    conv_cfg=self.conv_cfg,
                    norm_cfg=self.norm_cfg))
        if num_convs > 0:
            dim = self.conv_out_channels
        fcs = nn.ModuleList()
        if num_fcs > 0:
            # The first fc of a branch sees a flattened map unless the
            # shared trunk already ended in an fc.
            if (is_shared or self.num_shared_fcs == 0) and \
                    not self.with_avg_pool:
                dim *= self.roi_feat_area
            for i in range(num_fcs):
                fcs.append(
                    nn.Linear(dim if i == 0 else self.fc_out_channels,
                              self.fc_out_channels))
            dim = self.fc_out_channels
        return convs, fcs, dim

    def _run_branch(self, x: Tensor, convs: nn.ModuleList,
                    fcs: nn.ModuleList) -> Tensor:
        for conv in convs:
            x = conv(x)
        if x.dim() > 2:
            if self.with_avg_pool:
                x = self.avg_pool(x)
            x = x.flatten(1)
        for fc in fcs:
            x = self.relu(fc(x))
        return x

    def forward(self, x: Tensor) -> Tuple[Optional[Tensor], Optional[Tensor]]:
        """``x (R, C, h, w)`` -> ``cls_score (R, num_classes + 1)``,
        ``bbox_pred (R, 4 * num_classes)`` (or ``(R, 4)``)."""
        for conv in self.shared_convs:
            x = conv(x)
        if self.num_shared_fcs > 0:
            if self.with_avg_pool:
                x = self.avg_pool(x)
            x = x.flatten(1)
            for fc in self.shared_fcs:
                x = self.relu(fc(x))
        cls_score = bbox_pred = None
        if self.with_cls:
            cls_score = self.fc_cls(
                self._run_branch(x, self.cls_convs, self.cls_fcs))
        if self.with_reg:
            bbox_pred = self.fc_reg(
                self._run_branch(x, self.reg_convs, self.reg_fcs))
        return cls_score, bbox_pred


def _layers(**counts) -> dict:
    """Every ``num_*`` layer count of :class:`ConvFCBBoxHead`: 0 unless
    given. The fixed heads pass all of them, so a config that sets one
    again fails (``got multiple values``) instead of being ignored."""
    keys = ('num_shared_convs', 'num_shared_fcs', 'num_cls_convs',
            'num_cls_fcs', 'num_reg_convs', 'num_reg_fcs')
    return {key: counts.get(key, 0) for key in keys}


@MODELS.register_module()
class Shared2FCBBoxHead(ConvFCBBoxHead):
    """Two shared fcs (Faster R-CNN with FPN)."""

    def __init__(self, fc_out_channels: int = 1024, *args, **kwargs):
        super().__init__(
            *args,
            fc_out_channels=fc_out_channels,
            **_layers(num_shared_fcs=2),
            **kwargs)


@MODELS.register_module()
class Shared4Conv1FCBBoxHead(ConvFCBBoxHead):
    """Four shared 3x3 convs and one shared fc (the GN heads)."""

    def __init__(self, fc_out_channels: int = 1024, *args, **kwargs):
        super().__init__(
            *args,
            fc_out_channels=fc_out_channels,
            **_layers(num_shared_convs=4, num_shared_fcs=1),
            **kwargs)
