"""SSD's head: per-level convs, softmax classification with hard-negative
mining (Liu et al., SSD: Single Shot MultiBox Detector, §2.2;
docs/ssd.md).

Anchors, targets, the box loss and decoding are :class:`AnchorHead`'s; this
file adds the per-level (unshared) layers, whose anchor count varies by
level, and the one override of the loss skeleton: the classification term
(:func:`hard_negative_ce`).
"""
from typing import List, Optional, Sequence, Tuple

import torch
import torch.nn as nn
from torch import Tensor

from ...registry import MODELS
from ..layers import ConvModule, DepthwiseSeparableConvModule
from .anchor_head import AnchorHead


def hard_negative_ce(ce: Tensor, pos_mask: Tensor,
                     neg_pos_ratio: float) -> Tensor:
    """Per image, the summed CE of all positives plus of the ``k`` largest
    negatives, ``k = min(neg_pos_ratio * #pos, #neg)`` (0 without
    positives).

    Args:
        ce: ``(B, N)`` per-anchor cross-entropy, already weighted (>= 0;
            anchors that take no part have 0).
        pos_mask: ``(B, N)`` bool, positive anchors; every other anchor is
            a negative candidate (mmdetection counts ignored anchors as
            negatives too; their ``ce`` is 0, so they are picked last).
        neg_pos_ratio: negatives kept per positive.

    Returns:
        ``(B,)`` unnormalised classification loss of each image.
    """
    num_pos = pos_mask.sum(1)
    num_neg = pos_mask.size(1) - num_pos
    num_keep = torch.minimum((neg_pos_ratio * num_pos).long(), num_neg)
    pos_sum = (ce * pos_mask).sum(1)
    k_max = int(num_keep.max()) if num_keep.numel() else 0
    # Positives sink below every negative (ce >= 0), so one batched topk
    # ranks each image's negatives; a rank mask keeps its own k of them.
    neg_ce = ce.masked_fill(pos_mask, -1.0)
    top = neg_ce.topk(k_max, dim=1).values  # (B, k_max), descending
    rank = torch.arange(k_max, device=ce.device)
    take = rank[None, :] < num_keep[:, None]
    neg_sum = torch.where(take, top, top.new_zeros(())).sum(1)
    return pos_sum + neg_sum


@MODELS.register_module()
class SSDHead(AnchorHead):
    """Per level, one classification and one regression branch (weights
    not shared between levels): ``stacked_convs`` optional convs, then a
    3x3 conv to ``A_l * (num_classes + 1)`` / ``A_l * 4`` channels; with
    ``use_depthwise`` (SSDLite) a depthwise 3x3 ConvModule and a 1x1 conv.
    ``A_l`` is the level's anchor count (4 or 6 for SSD).

    Softmax over ``num_classes + 1`` channels, background last. Training
    uses ``train_cfg`` keys ``assigner``, ``sampler`` (PseudoSampler),
    ``neg_pos_ratio`` (3), ``smoothl1_beta`` (1.0), ``allowed_border`` and
    ``pos_weight``; testing ``nms_pre``, ``score_thr``, ``nms``,
    ``max_per_img``, ``min_bbox_size``.

    Args:
        num_classes: foreground classes.
        in_channels: channels of each level's feature map.
        stacked_convs: hidden convs per branch before the output conv.
        feat_channels: channels of the hidden convs.
        use_depthwise: SSDLite layout (depthwise-separable convs).
        conv_cfg, norm_cfg, act_cfg: of the hidden / depthwise convs.
        anchor_generator, bbox_coder: TASK_UTILS configs. The default is
            SSD300 COCO (mmdetection's default range ``(0.1, 0.9)`` at
            input size 300 is rejected by its own generator).
        reg_decoded_bbox: regress decoded boxes instead of deltas.
    """

    def __init__(self,
                 num_classes: int = 80,
                 in_channels: Sequence[int] = (512, 1024, 512, 256, 256,
                                               256),
                 stacked_convs: int = 0,
                 feat_channels: int = 256,
                 use_depthwise: bool = False,
                 conv_cfg: Optional[dict] = None,
                 norm_cfg: Optional[dict] = None,
                 act_cfg: Optional[dict] = None,
                 anchor_generator: dict = dict(
                     type='SSDAnchorGenerator',
                     scale_major=False,
                     input_size=300,
                     strides=[8, 16, 32, 64, 100, 300],
                     ratios=([2], [2, 3], [2, 3], [2, 3], [2], [2]),
                     basesize_ratio_range=(0.15, 0.9)),
                 bbox_coder: dict = dict(
                     type='DeltaXYWHBBoxCoder',
                     clip_border=True,
                     target_means=[.0, .0, .0, .0],
                     target_stds=[1.0, 1.0, 1.0, 1.0]),
                 reg_decoded_bbox: bool = False,
                 train_cfg: Optional[dict] = None,
                 test_cfg: Optional[dict] = None,
                 init_cfg=dict(
                     type='Xavier',
                     layer='Conv2d',
                     distribution='uniform',
                     bias=0)):
        self.stacked_convs = stacked_convs
        self.use_depthwise = use_depthwise
        self.conv_cfg = conv_cfg
        self.norm_cfg = norm_cfg
        self.act_cfg = act_cfg
        train = train_cfg or {}
        self.neg_pos_ratio = train.get('neg_pos_ratio', 3)
        super().__init__(
            num_classes,
            tuple(in_channels),
            feat_channels=feat_channels,
            anchor_generator=anchor_generator,
            bbox_coder=bbox_coder,
            reg_decoded_bbox=reg_decoded_bbox,
            # mmdetection's SSDHead takes no loss configs: its losses are
            # fixed to softmax CE and smooth L1 (beta from train_cfg).
            loss_cls=dict(type='CrossEntropyLoss', use_sigmoid=False),
            loss_bbox=dict(
                type='SmoothL1Loss', beta=train.get('smoothl1_beta', 1.0)),
            train_cfg=train_cfg,
            test_cfg=test_cfg,
            init_cfg=init_cfg)

    def _init_layers(self) -> None:
        num_priors = self.num_base_priors
        if len(self.in_channels) != len(num_priors):
            raise ValueError(
                f'SSDHead: {len(self.in_channels)} in_channels '
                f'{self.in_channels} but the anchor generator has '
                f'{len(num_priors)} levels; give bbox_head.in_channels one '
                'entry per level (= neck.out_channels)')
        self.cls_convs = nn.ModuleList()
        self.reg_convs = nn.ModuleList()
        for channels, priors in zip(self.in_channels, num_priors):
            self.cls_convs.append(
                self._branch(channels, priors * self.cls_out_channels))
            self.reg_convs.append(
                self._branch(channels, priors * self.bbox_coder.encode_size))

    def _branch(self, in_channels: int, out_channels: int) -> nn.Sequential:
        """One level's branch; its indices give mmdetection's state_dict
        names (``cls_convs.<level>.<layer>``)."""
        hidden = (DepthwiseSeparableConvModule
                  if self.use_depthwise else ConvModule)
        layers = []
        for _ in range(self.stacked_convs):
            layers.append(
                hidden(
                    in_channels,
                    self.feat_channels,
                    3,
                    padding=1,
                    conv_cfg=self.conv_cfg,
                    norm_cfg=self.norm_cfg,
                    act_cfg=self.act_cfg))
            in_channels = self.feat_channels
        if self.use_depthwise:
            layers.append(
                ConvModule(
                    in_channels,
                    in_channels,
                    3,
                    padding=1,
                    groups=in_channels,
                    conv_cfg=self.conv_cfg,
                    norm_cfg=self.norm_cfg,
                    act_cfg=self.act_cfg))
            layers.append(nn.Conv2d(in_channels, out_channels, 1))
        else:
            layers.append(
                nn.Conv2d(in_channels, out_channels, 3, padding=1))
        return nn.Sequential(*layers)

    def forward(self, x: Tuple[Tensor]) -> Tuple[List[Tensor], List[Tensor]]:
        """Per level ``(B, A_l*(C+1), H, W)`` scores and ``(B, A_l*4, H, W)``
        deltas, channel ``a * (C+1) + c`` being anchor a, class c. Each
        level runs its own branches (there is no shared per-level
        ``forward_single``)."""
        if len(x) != len(self.cls_convs):
            raise ValueError(f'SSDHead: got {len(x)} feature maps for '
                             f'{len(self.cls_convs)} levels')
        cls_scores = [conv(feat) for feat, conv in zip(x, self.cls_convs)]
        bbox_preds = [conv(feat) for feat, conv in zip(x, self.reg_convs)]
        return cls_scores, bbox_preds

    def loss_cls_term(self, cls_score: Tensor, targets: dict) -> Tensor:
        """``sum_img (CE of positives + CE of the top-k negatives) / N``
        with ``N = avg_factor = sum_img max(#pos_img, 1)``; no eps here,
        unlike every other normalised loss (docs/ssd.md).

        The box term is the skeleton's: ``sum smooth-L1 of positive deltas
        / (N + eps)``. An image without positives (e.g. without ground
        truth) adds 0 to both and 1 to N. mmdetection returns per-image
        lists whose sum is logged; these are those sums.
        """
        num_imgs, num_anchors = targets['labels'].shape
        ce = self.loss_cls(
            cls_score.reshape(-1, self.cls_out_channels),
            targets['labels'].reshape(-1),
            targets['label_weights'].reshape(-1),
            reduction_override='none').view(num_imgs, num_anchors)
        per_image = hard_negative_ce(ce, targets['pos_mask'],
                                     self.neg_pos_ratio)
        return per_image.sum() / targets['avg_factor']
