"""Anchor-based dense head: priors, batched targets, losses, decoding.

Targets for the whole batch are one tensor program: anchors are shared by
every image of a batch (one padded input size), ground truths are padded to
the batch's largest count with a validity mask, and the assigner works on
``(B, G, N)`` overlaps. See MMDET_SEMANTICS §7 (targets, loss normalisation)
and §8 (prediction).
"""
from typing import List, Optional, Tuple

import torch
import torch.nn as nn
from mmengine.config import ConfigDict
from mmengine.structures import InstanceData
from torch import Tensor

from ...registry import MODELS, TASK_UTILS
from ..utils import (empty_instances, levels_to_images, pad_instances,
                     upcast_low_precision)
from .base_dense_head import BaseDenseHead, topk_per_image


class AnchorHead(BaseDenseHead):
    """One 1x1 classification conv and one 1x1 regression conv per level
    (subclasses replace the layers and keep everything else).

    Args:
        num_classes: foreground classes; background is label
            ``num_classes``.
        in_channels: channels of each input feature map.
        feat_channels: channels of the hidden convs (subclasses).
        anchor_generator, bbox_coder: TASK_UTILS configs.
        reg_decoded_bbox: regress decoded boxes (IoU-style losses) instead
            of deltas.
        loss_cls, loss_bbox: MODELS configs.
        train_cfg: ``assigner``, ``sampler`` (default PseudoSampler),
            ``allowed_border``, ``pos_weight``.
        test_cfg: ``nms_pre``, ``score_thr``, ``nms``, ``max_per_img``,
            ``min_bbox_size``.
    """

    def __init__(self,
                 num_classes: int,
                 in_channels: int,
                 feat_channels: int = 256,
                 anchor_generator: dict = dict(
                     type='AnchorGenerator',
                     scales=[8, 16, 32],
                     ratios=[0.5, 1.0, 2.0],
                     strides=[4, 8, 16, 32, 64]),
                 bbox_coder: dict = dict(
                     type='DeltaXYWHBBoxCoder',
                     clip_border=True,
                     target_means=(.0, .0, .0, .0),
                     target_stds=(1.0, 1.0, 1.0, 1.0)),
                 reg_decoded_bbox: bool = False,
                 loss_cls: dict = dict(
                     type='CrossEntropyLoss', use_sigmoid=True,
                     loss_weight=1.0),
                 loss_bbox: dict = dict(
                     type='SmoothL1Loss', beta=1.0 / 9.0, loss_weight=1.0),
                 train_cfg: Optional[dict] = None,
                 test_cfg: Optional[dict] = None,
                 init_cfg=dict(type='Normal', layer='Conv2d', std=0.01)):
        super().__init__(init_cfg=init_cfg)
        if not isinstance(num_classes, int) or num_classes < 1:
            raise ValueError(f'{type(self).__name__}: num_classes must be a '
                             f'positive int, got {num_classes!r}')
        self.num_classes = num_classes
        self.in_channels = in_channels
        self.feat_channels = feat_channels
        self.use_sigmoid_cls = loss_cls.get('use_sigmoid', False)
        self.cls_out_channels = (
            num_classes if self.use_sigmoid_cls else num_classes + 1)
        self.reg_decoded_bbox = reg_decoded_bbox
        self.prior_generator = TASK_UTILS.build(anchor_generator)
        # One anchor count per location for every level (RetinaNet, RPN).
        self.num_base_priors = self.prior_generator.num_base_priors[0]
        self.bbox_coder = TASK_UTILS.build(bbox_coder)
        self.loss_cls = MODELS.build(loss_cls)
        self.loss_bbox = MODELS.build(loss_bbox)
        self.train_cfg = ConfigDict(train_cfg) if train_cfg else None
        self.test_cfg = ConfigDict(test_cfg) if test_cfg else None
        if self.train_cfg:
            self.assigner = TASK_UTILS.build(self.train_cfg['assigner'])
            sampler = self.train_cfg.get('sampler', dict(type='PseudoSampler'))
            self.sampler = TASK_UTILS.build(sampler)
        self._init_layers()

    def _init_layers(self) -> None:
        self.conv_cls = nn.Conv2d(self.in_channels,
                                  self.num_base_priors * self.cls_out_channels,
                                  1)
        self.conv_reg = nn.Conv2d(
            self.in_channels,
            self.num_base_priors * self.bbox_coder.encode_size, 1)

    def forward_single(self, x: Tensor) -> Tuple[Tensor, Tensor]:
        """One level: ``(B, A*C, H, W)`` scores, ``(B, A*4, H, W)`` deltas."""
        return self.conv_cls(x), self.conv_reg(x)

    def forward(self, x: Tuple[Tensor]) -> Tuple[List[Tensor], List[Tensor]]:
        """Per-level ``cls_scores`` and ``bbox_preds`` (lists over levels)."""
        outs = [self.forward_single(feat) for feat in x]
        return [o[0] for o in outs], [o[1] for o in outs]

    # ------------------------------------------------------------- targets
    def get_anchors(self, featmap_sizes, batch_img_metas, device):
        """Anchors ``(N, 4)`` of all levels and valid flags ``(B, N)``.

        An anchor is valid when it lies in the part of the padded batch
        input covered by its image's own padding (``pad_shape``).
        """
        mlvl_anchors = self.prior_generator.grid_priors(
            featmap_sizes, device=device)
        anchors = torch.cat(mlvl_anchors)
        valid = torch.stack([
            torch.cat(
                self.prior_generator.valid_flags(
                    featmap_sizes, meta.get('pad_shape', meta['img_shape']),
                    device)) for meta in batch_img_metas
        ])
        allowed_border = (self.train_cfg or {}).get('allowed_border', -1)
        if allowed_border >= 0:
            valid = valid & self._inside_flags(anchors, batch_img_metas,
                                               allowed_border)
        return anchors, valid

    @staticmethod
    def _inside_flags(anchors, batch_img_metas, border):
        shapes = anchors.new_tensor(
            [meta['img_shape'][:2] for meta in batch_img_metas])  # (B, 2)
        h, w = shapes[:, None, 0], shapes[:, None, 1]
        return ((anchors[None, :, 0] >= -border) &
                (anchors[None, :, 1] >= -border) &
                (anchors[None, :, 2] < w + border) &
                (anchors[None, :, 3] < h + border))

    def get_targets(self, anchors: Tensor, valid: Tensor,
                    batch_gt_instances, batch_gt_instances_ignore=None):
        """Classification and regression targets of every anchor.

        Args:
            anchors: ``(N, 4)`` shared by the batch.
            valid: ``(B, N)`` anchors that take part.

        Returns:
            dict: ``labels (B, N)`` (``num_classes`` = background),
            ``label_weights (B, N)``, ``bbox_targets (B, N, 4)``,
            ``bbox_weights (B, N, 4)``, ``pos_mask``, ``neg_mask`` and
            ``avg_factor`` (float, see MMDET_SEMANTICS §7).
        """
        device = anchors.device
        gt_bboxes, gt_labels, gt_valid = pad_instances(
            batch_gt_instances, device)
        ignore_bboxes = ignore_valid = None
        if batch_gt_instances_ignore is not None and any(
                ign is not None and len(ign) > 0
                for ign in batch_gt_instances_ignore):
            ignore_bboxes, _, ignore_valid = pad_instances(
                batch_gt_instances_ignore, device, with_labels=False)
        assign = self.assigner.assign_batch(
            anchors,
            gt_bboxes,
            gt_labels,
            gt_valid=gt_valid,
            priors_valid=valid,
            gt_bboxes_ignore=ignore_bboxes,
            ignore_valid=ignore_valid)
        pos_mask, neg_mask = self.sampler.sample_batch(assign)

        num_imgs, num_anchors = valid.shape
        labels = anchors.new_full((num_imgs, num_anchors),
                                  self.num_classes,
                                  dtype=torch.long)
        labels[pos_mask] = assign.labels[pos_mask]
        pos_weight = self.train_cfg.get('pos_weight', -1)
        label_weights = (pos_mask | neg_mask).to(anchors.dtype)
        if pos_weight > 0:
            label_weights[pos_mask] = pos_weight

        bbox_targets = anchors.new_zeros((num_imgs, num_anchors, 4))
        bbox_weights = anchors.new_zeros((num_imgs, num_anchors, 4))
        img_idx, anchor_idx = pos_mask.nonzero(as_tuple=True)
        pos_gt = gt_bboxes[img_idx, assign.gt_inds[img_idx, anchor_idx] - 1]
        if self.reg_decoded_bbox:
            bbox_targets[img_idx, anchor_idx] = pos_gt
        else:
            bbox_targets[img_idx, anchor_idx] = self.bbox_coder.encode(
                anchors[anchor_idx], pos_gt)
        bbox_weights[img_idx, anchor_idx] = 1.0
        return dict(
            labels=labels,
            label_weights=label_weights,
            bbox_targets=bbox_targets,
            bbox_weights=bbox_weights,
            pos_mask=pos_mask,
            neg_mask=neg_mask,
            avg_factor=self.sampler.avg_factor(pos_mask, neg_mask))

    # --------------------------------------------------------------- losses
    def loss_by_feat(self,
                     cls_scores: List[Tensor],
                     bbox_preds: List[Tensor],
                     batch_gt_instances: List[InstanceData],
                     batch_img_metas: List[dict],
                     batch_gt_instances_ignore=None) -> dict:
        """``loss_cls`` and ``loss_bbox`` over all anchors of the batch.

        Equal to the sum of mmdetection's per-level losses: both are sums
        over anchors divided by the same ``avg_factor``.
        """
        featmap_sizes = [s.shape[-2:] for s in cls_scores]
        anchors, valid = self.get_anchors(featmap_sizes, batch_img_metas,
                                          cls_scores[0].device)
        targets = self.get_targets(anchors, valid, batch_gt_instances,
                                   batch_gt_instances_ignore)
        avg_factor = targets['avg_factor']
        cls_score = levels_to_images(cls_scores, self.cls_out_channels)
        bbox_pred = levels_to_images(bbox_preds, self.bbox_coder.encode_size)

        loss_cls = self.loss_cls(
            cls_score.reshape(-1, self.cls_out_channels),
            targets['labels'].reshape(-1),
            targets['label_weights'].reshape(-1),
            avg_factor=avg_factor)

        pred = bbox_pred.reshape(-1, self.bbox_coder.encode_size)
        if self.reg_decoded_bbox:
            pred = self.bbox_coder.decode(
                anchors.expand(cls_score.size(0), -1, -1).reshape(-1, 4),
                pred)
        loss_bbox = self.loss_bbox(
            pred,
            targets['bbox_targets'].reshape(-1, 4),
            targets['bbox_weights'].reshape(-1, 4),
            avg_factor=avg_factor)
        return dict(loss_cls=loss_cls, loss_bbox=loss_bbox)

    # ------------------------------------------------------------- predict
    def predict_by_feat(self,
                        cls_scores: List[Tensor],
                        bbox_preds: List[Tensor],
                        score_factors=None,
                        batch_img_metas: Optional[List[dict]] = None,
                        cfg: Optional[ConfigDict] = None,
                        rescale: bool = False,
                        with_nms: bool = True) -> List[InstanceData]:
        """Detections per image (MMDET_SEMANTICS §8).

        Per level, the top ``nms_pre`` (prior, class) pairs above
        ``score_thr`` of every image are chosen in one batched ``topk``;
        only those are decoded. NMS then runs per image.
        """
        cfg = self.test_cfg if cfg is None else cfg
        cfg = ConfigDict(cfg)
        # fp16/bf16 inference: decode in float32.
        cls_scores = upcast_low_precision(cls_scores)
        bbox_preds = upcast_low_precision(bbox_preds)
        featmap_sizes = [s.shape[-2:] for s in cls_scores]
        device = cls_scores[0].device
        mlvl_priors = self.prior_generator.grid_priors(
            featmap_sizes, dtype=cls_scores[0].dtype, device=device)
        nms_pre = cfg.get('nms_pre', -1)
        score_thr = cfg.get('score_thr', 0)
        img_shapes = [meta['img_shape'][:2] for meta in batch_img_metas]

        boxes, scores, labels, valids = [], [], [], []
        for cls_score, bbox_pred, priors in zip(cls_scores, bbox_preds,
                                                mlvl_priors):
            level_scores = self._scores_of(
                levels_to_images([cls_score], self.cls_out_channels))
            deltas = levels_to_images([bbox_pred],
                                      self.bbox_coder.encode_size)
            top_scores, prior_idx, top_labels, valid = topk_per_image(
                level_scores, score_thr, nms_pre)
            top_deltas = deltas.gather(
                1, prior_idx[..., None].expand(-1, -1, deltas.size(-1)))
            boxes.append(
                self.bbox_coder.decode(
                    priors[prior_idx], top_deltas, max_shape=img_shapes))
            scores.append(top_scores)
            labels.append(top_labels)
            valids.append(valid)
        boxes, scores = torch.cat(boxes, 1), torch.cat(scores, 1)
        labels, valids = torch.cat(labels, 1), torch.cat(valids, 1)

        results_list = []
        for img_id, meta in enumerate(batch_img_metas):
            keep = valids[img_id]
            if not bool(keep.any()):
                results_list.append(empty_instances(device))
                continue
            results = InstanceData(
                bboxes=boxes[img_id][keep],
                scores=scores[img_id][keep],
                labels=labels[img_id][keep])
            results_list.append(
                self.bbox_post_process(results, cfg, rescale, with_nms,
                                       meta))
        return results_list

    def _scores_of(self, cls_logits: Tensor) -> Tensor:
        """Probabilities ``(B, N, num_classes)``: sigmoid, or softmax with
        the background column (the last) dropped."""
        if self.use_sigmoid_cls:
            return cls_logits.sigmoid()
        return cls_logits.softmax(-1)[..., :-1]
