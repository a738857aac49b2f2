"""ATSS's head (Zhang et al., Bridging the Gap Between Anchor-based and
Anchor-free Detection via Adaptive Training Sample Selection, 2020;
docs/atss.md).

One anchor per location, GN towers as FCOS's (:func:`conv_tower`), a
centerness logit next to the class scores and the deltas. The head is
:class:`AnchorHead`'s skeleton with these hooks:

* ``assign``: :class:`ATSSAssigner` over the whole batch; anchors outside
  an image's own padded area are removed from that image before
  assignment (``priors_valid``), as mmdetection removes them;
* ``get_targets``: the anchor head's targets (pseudo sampler, ground-truth
  boxes as box targets: ``reg_decoded_bbox=True``) plus the centerness
  targets of the positives, from their anchors' centres;
* ``loss_bbox_term``: GIoU of the positives' decoded boxes against their
  ground truths, weighted by the centerness targets;
* ``loss_score_factor_term``: the centerness BCE.

Normalisation (mmdetection's; ``reduce_mean`` averages over DDP ranks):
``avg_factor = reduce_mean(sum over images of max(#pos, 1))`` divides the
classification and centerness losses; the box loss (formed with
``avg_factor=1``, i.e. divided by ``1 + eps``) is divided by
``bbox_avg_factor = max(reduce_mean(sum of the centerness targets), 1)``.

mmdetection computes the three losses level by level, each with these same
denominators, and sums the levels when it logs them; detkit forms each loss
once over all anchors of the batch (image-major). The terms are the same,
so the sums — the losses and the centerness sum in ``bbox_avg_factor`` —
differ from mmdetection's only in the order of their float additions.
"""
from typing import List, Optional

import torch
import torch.nn as nn
from torch import Tensor

from ...registry import MODELS
from ..layers import Scale
from ..utils import PaddedGts, reduce_mean
from .anchor_head import AnchorHead
from .fcos_head import centerness_target, conv_tower


@MODELS.register_module()
class ATSSHead(AnchorHead):
    """Two GN towers shared by the levels, then ``atss_cls`` (A * C),
    ``atss_reg`` (A * 4 deltas) and ``atss_centerness`` (A logits, from the
    regression tower), and one ``Scale`` per level on the deltas: the
    arguments, defaults and state_dict names of mmdetection's ATSSHead.

    Args:
        num_classes: number of object classes (one sigmoid each).
        in_channels: input channels, the same on all levels.
        pred_kernel_size: kernel of the three output convs.
        stacked_convs: depth of each tower.
        conv_cfg, norm_cfg: of the tower convs (GN by default).
        reg_decoded_bbox: regress decoded boxes (True: GIoU on boxes).
        loss_centerness: MODELS config of the centerness loss.
        **kwargs: :class:`AnchorHead` arguments (``feat_channels``,
            ``anchor_generator``, ``bbox_coder``, ``loss_cls``,
            ``loss_bbox``, ``train_cfg`` with ``assigner=ATSSAssigner``,
            ``test_cfg``).
    """

    def __init__(self,
                 num_classes: int,
                 in_channels: int,
                 pred_kernel_size: int = 3,
                 stacked_convs: int = 4,
                 conv_cfg=None,
                 norm_cfg=dict(type='GN', num_groups=32, requires_grad=True),
                 reg_decoded_bbox: bool = True,
                 loss_centerness: dict = dict(type='CrossEntropyLoss',
                                              use_sigmoid=True,
                                              loss_weight=1.0),
                 init_cfg=dict(type='Normal', layer='Conv2d', std=0.01,
                               override=dict(type='Normal', name='atss_cls',
                                             std=0.01, bias_prob=0.01)),
                 **kwargs):
        self.pred_kernel_size = pred_kernel_size
        self.stacked_convs = stacked_convs
        self.conv_cfg = conv_cfg
        self.norm_cfg = norm_cfg
        super().__init__(num_classes, in_channels,
                         reg_decoded_bbox=reg_decoded_bbox,
                         init_cfg=init_cfg, **kwargs)
        self.loss_centerness = MODELS.build(loss_centerness)

    def _init_layers(self) -> None:
        num_priors = self.shared_num_base_priors()
        tower = (self.in_channels, self.feat_channels, self.stacked_convs,
                 self.conv_cfg, self.norm_cfg)
        self.cls_convs = conv_tower(*tower)
        self.reg_convs = conv_tower(*tower)
        k = self.pred_kernel_size

        def predictor(channels):
            return nn.Conv2d(self.feat_channels, num_priors * channels, k,
                             padding=k // 2)

        self.atss_cls = predictor(self.cls_out_channels)
        self.atss_reg = predictor(self.bbox_coder.encode_size)
        self.atss_centerness = predictor(1)
        self.scales = nn.ModuleList(
            Scale(1.0) for _ in self.prior_generator.strides)

    def forward(self, x):
        """``(cls_scores, bbox_preds, centernesses)``, per level ``(B, A*C,
        H, W)``, ``(B, A*4, H, W)`` float32 deltas, ``(B, A, H, W)``."""
        outs = [self.forward_single(feat, scale)
                for feat, scale in zip(x, self.scales)]
        return tuple(list(level_outs) for level_outs in zip(*outs))

    def forward_single(self, x: Tensor, scale: Scale):
        cls_feat, reg_feat = x, x
        for conv in self.cls_convs:
            cls_feat = conv(cls_feat)
        for conv in self.reg_convs:
            reg_feat = conv(reg_feat)
        bbox_pred = scale(self.atss_reg(reg_feat)).float()
        return (self.atss_cls(cls_feat), bbox_pred,
                self.atss_centerness(reg_feat))

    # -------------------------------------------------------------- targets
    def assign(self, priors: Tensor, valid: Tensor, gts: PaddedGts,
               num_level_priors: Optional[List[int]] = None):
        """Hook: the batched ATSS assignment; ``num_level_priors`` are the
        full grids' counts, removed anchors are carried by ``valid``."""
        return self.assigner.assign_batch(
            priors, num_level_priors, gts.bboxes, gts.labels,
            gt_valid=gts.valid, priors_valid=valid,
            gt_bboxes_ignore=gts.ignore_bboxes,
            ignore_valid=gts.ignore_valid)

    def get_targets(self, priors: Tensor, valid: Tensor, gts: PaddedGts,
                    batch_img_metas: Optional[List[dict]] = None,
                    num_level_priors: Optional[List[int]] = None) -> dict:
        """Hook: :meth:`AnchorHead.get_targets` plus ``centerness_targets
        (B, N)`` (0 off the positives), ``avg_factor`` reduced over ranks
        and ``bbox_avg_factor`` (floats)."""
        targets = super().get_targets(priors, valid, gts, batch_img_metas,
                                      num_level_priors)
        img, idx = targets['pos_mask'].nonzero(as_tuple=True)
        anchors = priors[idx]
        boxes = targets['bbox_targets'][img, idx]
        cx = (anchors[:, 2] + anchors[:, 0]) / 2
        cy = (anchors[:, 3] + anchors[:, 1]) / 2
        pos_centerness = centerness_target(torch.stack(
            [cx - boxes[:, 0], cy - boxes[:, 1], boxes[:, 2] - cx,
             boxes[:, 3] - cy], -1))
        centerness_targets = priors.new_zeros(targets['pos_mask'].shape)
        centerness_targets[img, idx] = pos_centerness
        device = priors.device
        avg_factor = reduce_mean(
            torch.as_tensor(targets['avg_factor'], dtype=torch.float,
                            device=device)).item()
        bbox_avg_factor = reduce_mean(
            pos_centerness.sum()).clamp_(min=1).item()
        targets.update(centerness_targets=centerness_targets,
                       avg_factor=avg_factor, bbox_avg_factor=bbox_avg_factor)
        return targets

    # --------------------------------------------------------------- losses
    def loss_by_feat(self, cls_scores, bbox_preds, centernesses,
                     batch_gt_instances, batch_img_metas,
                     batch_gt_instances_ignore=None) -> dict:
        """``loss_cls``, ``loss_bbox``, ``loss_centerness``, each one tensor
        over all levels (mmdetection returns per-level lists whose sum is
        logged)."""
        return super().loss_by_feat(
            cls_scores, bbox_preds, batch_gt_instances, batch_img_metas,
            batch_gt_instances_ignore, score_factors=centernesses)

    def loss_bbox_term(self, bbox_pred: Tensor, priors: Tensor,
                       targets: dict) -> Tensor:
        """Hook: ``loss_bbox(decode(anchor, pred), gt box, weight=
        centerness target, avg_factor=1) / bbox_avg_factor`` over the
        positives (their boxes decoded without clipping); 0 without
        positives."""
        img, idx = targets['pos_mask'].nonzero(as_tuple=True)
        if img.numel() == 0:
            return bbox_pred.sum() * 0
        decoded = self.bbox_coder.decode(priors[idx], bbox_pred[img, idx])
        loss = self.loss_bbox(
            decoded, targets['bbox_targets'][img, idx],
            weight=targets['centerness_targets'][img, idx], avg_factor=1.0)
        return loss / targets['bbox_avg_factor']

    def loss_score_factor_term(self, score_factor: Tensor, priors: Tensor,
                               targets: dict) -> Tensor:
        """Hook: BCE of the positives' centerness logits against their
        targets, over ``avg_factor``; 0 without positives."""
        pos = targets['pos_mask']
        if not bool(pos.any()):
            return score_factor.sum() * 0
        return self.loss_centerness(score_factor[pos],
                                    targets['centerness_targets'][pos],
                                    avg_factor=targets['avg_factor'])
