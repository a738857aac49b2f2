"""Region proposal network head (Ren et al., Faster R-CNN, §3.1;
docs/rpn.md).

One 3x3 conv shared by all FPN levels, then a 1x1 objectness conv (one
sigmoid score per anchor) and a 1x1 regression conv. Everything else is
:class:`AnchorHead`'s skeleton with three settings:

* ``class_agnostic``: every positive anchor has label 0 ("object"), whatever
  its ground truth's class — so no data sample is copied to zero labels;
* ``loss_names``: ``loss_rpn_cls`` / ``loss_rpn_bbox``, which do not clash
  with the RoI head's losses. With ``RandomSampler`` both are divided by
  ``sum over images of max(#pos, 1) + max(#neg, 1)``;
* ``nms_groups = 'level'``: proposals take, per level and image, the
  ``nms_pre`` best-scoring anchors (no score threshold), are decoded, lose
  boxes not larger than ``min_bbox_size``, then go through NMS with the
  level as the group (proposals of different levels never suppress each
  other), and ``max_per_img`` are kept.
"""
import torch.nn as nn
import torch.nn.functional as F
from torch import Tensor

from ...registry import MODELS
from ..layers import ConvModule
from .anchor_head import AnchorHead


@MODELS.register_module()
class RPNHead(AnchorHead):
    """RPN head with mmdetection's layer names ``rpn_conv``, ``rpn_cls``,
    ``rpn_reg``.

    Args:
        in_channels: channels of every FPN level.
        num_classes: must be 1 (objectness).
        num_convs: shared 3x3 convs before the 1x1 predictors; with more
            than one they are ConvModules in an ``nn.Sequential``.
        **kwargs: :class:`AnchorHead` arguments (``feat_channels``,
            ``anchor_generator``, ``bbox_coder``, losses, ``train_cfg``,
            ``test_cfg``: ``nms_pre``, ``max_per_img``, ``nms``,
            ``min_bbox_size``).
    """

    loss_names = dict(cls='loss_rpn_cls', bbox='loss_rpn_bbox',
                      score_factor='loss_rpn_centerness')
    class_agnostic = True
    nms_groups = 'level'

    def __init__(self,
                 in_channels: int,
                 num_classes: int = 1,
                 init_cfg=dict(type='Normal', layer='Conv2d', std=0.01),
                 num_convs: int = 1,
                 **kwargs):
        if num_classes != 1:
            raise ValueError('RPNHead: num_classes must be 1 (objectness), '
                             f'got {num_classes}; detectors set it for you.')
        self.num_convs = num_convs
        super().__init__(
            num_classes=num_classes,
            in_channels=in_channels,
            init_cfg=init_cfg,
            **kwargs)

    def _init_layers(self) -> None:
        num_priors = self.shared_num_base_priors()
        if self.num_convs > 1:
            self.rpn_conv = nn.Sequential(*[
                ConvModule(
                    self.in_channels if i == 0 else self.feat_channels,
                    self.feat_channels,
                    3,
                    padding=1,
                    inplace=False) for i in range(self.num_convs)
            ])
        else:
            self.rpn_conv = nn.Conv2d(
                self.in_channels, self.feat_channels, 3, padding=1)
        self.rpn_cls = nn.Conv2d(self.feat_channels,
                                 num_priors * self.cls_out_channels, 1)
        self.rpn_reg = nn.Conv2d(self.feat_channels,
                                 num_priors * self.bbox_coder.encode_size, 1)

    def forward_single(self, x: Tensor):
        """One level: ``(B, A, H, W)`` objectness logits, ``(B, A*4, H, W)``
        deltas."""
        x = F.relu(self.rpn_conv(x))
        return self.rpn_cls(x), self.rpn_reg(x)
