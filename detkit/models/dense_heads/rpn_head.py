"""Region proposal network head (Ren et al., Faster R-CNN, §3.1).

One 3x3 conv shared by all FPN levels, then a 1x1 objectness conv (one
sigmoid score per anchor) and a 1x1 regression conv. Training is
:class:`AnchorHead`'s batched targets with the ground-truth labels zeroed
(an RPN knows only "object"); with ``RandomSampler`` both losses are divided
by ``sum over images of max(#pos, 1) + max(#neg, 1)`` (MMDET_SEMANTICS §10).

Proposals (§10) take, per level and image, the ``nms_pre`` best-scoring
anchors (one batched ``topk`` per level), decode all levels at once, drop
boxes not larger than ``min_bbox_size``, then run NMS with the level as the
group, so proposals of different levels never suppress each other, and
keep ``max_per_img``.
"""
from typing import List, Optional

import torch
import torch.nn as nn
import torch.nn.functional as F
from mmengine.config import ConfigDict
from mmengine.structures import InstanceData
from torch import Tensor

from ...registry import MODELS
from ..layers import ConvModule
from ..utils import (empty_instances, levels_to_images,
                     upcast_low_precision)
from .anchor_head import AnchorHead


def zero_gt_labels(batch_gt_instances: List[InstanceData]
                   ) -> List[InstanceData]:
    """Copies of the ground truths with every label 0 ("object"); the
    inputs are left untouched."""
    zeroed = []
    for gt in batch_gt_instances:
        copy = InstanceData(metainfo=gt.metainfo)
        for key, value in gt.items():
            copy[key] = value
        copy.labels = torch.zeros_like(gt.labels)
        zeroed.append(copy)
    return zeroed


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
        self.rpn_cls = nn.Conv2d(
            self.feat_channels, self.num_base_priors * self.cls_out_channels,
            1)
        self.rpn_reg = nn.Conv2d(
            self.feat_channels,
            self.num_base_priors * self.bbox_coder.encode_size, 1)

    def forward_single(self, x: Tensor):
        """One level: ``(B, A, H, W)`` objectness logits, ``(B, A*4, H, W)``
        deltas."""
        x = F.relu(self.rpn_conv(x))
        return self.rpn_cls(x), self.rpn_reg(x)

    def loss_by_feat(self,
                     cls_scores: List[Tensor],
                     bbox_preds: List[Tensor],
                     batch_gt_instances: List[InstanceData],
                     batch_img_metas: List[dict],
                     batch_gt_instances_ignore=None) -> dict:
        """``loss_rpn_cls`` and ``loss_rpn_bbox`` (sums over all levels)."""
        losses = super().loss_by_feat(
            cls_scores, bbox_preds, zero_gt_labels(batch_gt_instances),
            batch_img_metas, batch_gt_instances_ignore)
        return dict(
            loss_rpn_cls=losses['loss_cls'],
            loss_rpn_bbox=losses['loss_bbox'])

    def predict_by_feat(self,
                        cls_scores: List[Tensor],
                        bbox_preds: List[Tensor],
                        score_factors=None,
                        batch_img_metas: Optional[List[dict]] = None,
                        cfg: Optional[ConfigDict] = None,
                        rescale: bool = False,
                        with_nms: bool = True) -> List[InstanceData]:
        """Proposals per image: ``bboxes (K, 4)`` (resized-image pixels, or
        original-image pixels with ``rescale``), ``scores (K,)`` descending,
        ``labels (K,)`` all 0."""
        if not with_nms:
            raise ValueError('RPNHead.predict_by_feat: proposals always go '
                             'through NMS (with_nms=False is not supported)')
        cfg = ConfigDict(self.test_cfg if cfg is None else cfg)
        # fp16/bf16 inference: anchors, scores and proposals in float32.
        cls_scores = upcast_low_precision(cls_scores)
        bbox_preds = upcast_low_precision(bbox_preds)
        featmap_sizes = [s.shape[-2:] for s in cls_scores]
        device = cls_scores[0].device
        mlvl_priors = self.prior_generator.grid_priors(
            featmap_sizes, dtype=cls_scores[0].dtype, device=device)
        nms_pre = cfg.get('nms_pre', -1)

        scores, deltas, priors, level_ids = [], [], [], []
        for level, (cls_score, bbox_pred, level_priors) in enumerate(
                zip(cls_scores, bbox_preds, mlvl_priors)):
            level_scores = self._scores_of(
                levels_to_images([cls_score], self.cls_out_channels))[..., 0]
            level_deltas = levels_to_images([bbox_pred],
                                            self.bbox_coder.encode_size)
            num = level_scores.size(1)
            if 0 < nms_pre < num:
                level_scores, top = level_scores.topk(nms_pre, dim=1)
                level_deltas = level_deltas.gather(
                    1, top[..., None].expand(-1, -1, level_deltas.size(-1)))
                level_priors = level_priors[top]  # (B, nms_pre, 4)
            else:
                level_priors = level_priors.expand(
                    level_scores.size(0), -1, -1)
            scores.append(level_scores)
            deltas.append(level_deltas)
            priors.append(level_priors)
            level_ids.append(
                torch.full((level_scores.size(1), ),
                           level,
                           dtype=torch.long,
                           device=device))
        scores, level_ids = torch.cat(scores, 1), torch.cat(level_ids)
        img_shapes = [meta['img_shape'][:2] for meta in batch_img_metas]
        bboxes = self.bbox_coder.decode(
            torch.cat(priors, 1), torch.cat(deltas, 1), max_shape=img_shapes)

        # Each image keeps a different number of boxes from here on.
        results_list = []
        for img_id, meta in enumerate(batch_img_metas):
            results = InstanceData(
                bboxes=bboxes[img_id],
                scores=scores[img_id],
                level_ids=level_ids)
            results = self.bbox_post_process(
                results, cfg, rescale=rescale, with_nms=True, img_meta=meta)
            if len(results) == 0:
                results_list.append(empty_instances(device))
                continue
            if 'level_ids' in results:
                del results.level_ids
            results.labels = results.scores.new_zeros(
                len(results), dtype=torch.long)
            results_list.append(results)
        return results_list
