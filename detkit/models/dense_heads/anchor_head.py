"""The training skeleton of every dense head: priors -> targets ->
classification term -> box term -> named losses (docs/anchor_head.md).

:meth:`AnchorHead.loss_by_feat` is the one loss program; a head changes it
only through these hooks (each a method or class attribute):

``get_priors(featmap_sizes, batch_img_metas, device)``
    ``(priors, valid, num_level_priors)``: priors of all levels ``(N, 4)``
    anchors here, ``(N, 2)`` points for an anchor-free head (FCOS: its
    ``MlvlPointGenerator``), shared by the batch; ``valid (B, N)`` bool;
    priors per level. Prediction uses ``prior_generator.grid_priors``.
``get_targets(priors, valid, gts, batch_img_metas, num_level_priors)``
    the target rule, for the whole batch: ``gts`` is :class:`PaddedGts`
    (``(B, G, 4)`` boxes + ``(B, G)`` mask). Returns a dict with at least
    ``labels (B, N)`` (``num_classes`` = background), ``label_weights (B,
    N)``, ``bbox_targets (B, N, 4)``, ``bbox_weights (B, N, 4)``,
    ``pos_mask``, ``neg_mask`` and ``avg_factor`` (the loss normaliser);
    a head may add keys for its own terms (FCOS: centerness targets; its
    avg_factor is ``max(reduce_mean(#pos), 1)``). The default assigns
    (``assign`` hook), samples and encodes with :func:`sampled_targets`.
``assign(priors, valid, gts, num_level_priors)``
    the batched assignment (ATSS: ``assign_batch(priors, num_level_priors,
    ...)``).
``loss_cls_term(cls_score, targets)``
    ``cls_score (B, N, C)``; SSD overrides it (hard-negative mining).
``loss_bbox_term(bbox_pred, priors, targets)``
    ``bbox_pred (B, N, 4)``; FCOS / ATSS override it (IoU loss on the
    positives' decoded boxes weighted by centerness targets, divided by
    their ``reduce_mean`` sum).
``loss_score_factor_term(score_factor, priors, targets)``
    the loss of a third per-level output ``score_factor (B, N)`` (FCOS /
    ATSS centerness logits), named ``loss_names['score_factor']``.
``loss_names``, ``class_agnostic``
    the names of the terms (``cls``, ``bbox``, ``score_factor``); with
    ``class_agnostic`` every positive gets label 0 ("object"). RPNHead has
    ``loss_rpn_cls`` / ``loss_rpn_bbox`` and class-agnostic targets; a
    detector makes any other dense head its RPN with :meth:`use_as_rpn`.

A head with a third output (FCOS / ATSS centerness) returns it from
``forward_single`` as a third value; ``forward`` then returns three lists,
and the head passes the third on in its ``loss_by_feat(cls_scores,
bbox_preds, centernesses, batch_gt_instances, batch_img_metas,
batch_gt_instances_ignore=None)`` as ``super().loss_by_feat(...,
score_factors=centernesses)``; prediction takes it as ``score_factors``
(see base_dense_head.py).
"""
from typing import List, Optional, Tuple

import torch
import torch.nn as nn
from mmengine.config import ConfigDict
from mmengine.structures import InstanceData
from torch import Tensor

from ...registry import MODELS, TASK_UTILS
from ..utils import PaddedGts, levels_to_images, pad_gts, sampled_targets
from .base_dense_head import BaseDenseHead


class AnchorHead(BaseDenseHead):
    """One 1x1 classification conv and one 1x1 regression conv per level
    (subclasses replace the layers and keep everything else).

    Args:
        num_classes: foreground classes; background is label
            ``num_classes``.
        in_channels: channels of each input feature map.
        feat_channels: channels of the hidden convs (subclasses).
        anchor_generator, bbox_coder: TASK_UTILS configs (the prior
            generator may be any, e.g. a point generator).
        reg_decoded_bbox: regress decoded boxes (IoU-style losses) instead
            of deltas.
        loss_cls, loss_bbox: MODELS configs.
        train_cfg: ``assigner``, ``sampler`` (default PseudoSampler),
            ``allowed_border``, ``pos_weight``.
        test_cfg: ``nms_pre``, ``score_thr``, ``nms``, ``max_per_img``,
            ``min_bbox_size``.

    Attributes:
        num_base_priors: priors per location, one int per level.
    """

    loss_names = dict(cls='loss_cls', bbox='loss_bbox',
                      score_factor='loss_centerness')
    class_agnostic = False

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
        self.num_base_priors = list(self.prior_generator.num_base_priors)
        self.bbox_coder = TASK_UTILS.build(bbox_coder)
        self.loss_cls = MODELS.build(loss_cls)
        self.loss_bbox = MODELS.build(loss_bbox)
        self.train_cfg = ConfigDict(train_cfg) if train_cfg else None
        self.test_cfg = ConfigDict(test_cfg) if test_cfg else None
        if self.train_cfg:
            self.assigner = TASK_UTILS.build(self.train_cfg['assigner'])
            sampler = self.train_cfg.get('sampler', dict(type='PseudoSampler'))
            self.sampler = TASK_UTILS.build(
                sampler, default_args=dict(context=self))
        self._init_layers()

    def use_as_rpn(self, rpn_loss_names: bool = True) -> None:
        """Serve as a region proposal network: class-agnostic targets and,
        with ``rpn_loss_names``, every loss name without ``rpn`` in it
        prefixed with ``rpn_``, as mmdetection's two-stage detector renames
        them (an FCOS head as RPN logs ``rpn_loss_cls``, ``rpn_loss_bbox``,
        ``rpn_loss_centerness``), so that they never clash with the RoI
        head's. RPNHead is both already (``loss_rpn_cls``,
        ``loss_rpn_bbox``)."""
        self.class_agnostic = True
        if rpn_loss_names:
            self.loss_names = {
                term: name if 'rpn' in name or 'loss' not in name else
                f'rpn_{name}'
                for term, name in self.loss_names.items()
            }

    def shared_num_base_priors(self) -> int:
        """The one prior count per location of a head whose layers serve
        every level (RetinaNet, RPN)."""
        if len(set(self.num_base_priors)) != 1:
            raise ValueError(
                f'{type(self).__name__}: its layers are shared by all '
                'levels, so every level needs the same number of priors '
                f'per location; the generator gives {self.num_base_priors}')
        return self.num_base_priors[0]

    def _init_layers(self) -> None:
        num_priors = self.shared_num_base_priors()
        self.conv_cls = nn.Conv2d(self.in_channels,
                                  num_priors * self.cls_out_channels, 1)
        self.conv_reg = nn.Conv2d(self.in_channels,
                                  num_priors * self.bbox_coder.encode_size, 1)

    def forward_single(self, x: Tensor) -> Tuple[Tensor, Tensor]:
        """One level: ``(B, A*C, H, W)`` scores, ``(B, A*4, H, W)`` deltas."""
        return self.conv_cls(x), self.conv_reg(x)

    def forward(self, x: Tuple[Tensor]) -> Tuple[List[Tensor], ...]:
        """Per-level outputs of ``forward_single``, one list per output
        (``cls_scores``, ``bbox_preds``, ...)."""
        outs = [self.forward_single(feat) for feat in x]
        return tuple(list(level_outs) for level_outs in zip(*outs))

    # -------------------------------------------------------------- priors
    def get_anchors(self, featmap_sizes, batch_img_metas, device):
        """Anchors ``(N, 4)`` of all levels and valid flags ``(B, N)``.

        An anchor is valid when it lies in the part of the padded batch
        input covered by its image's own padding (``pad_shape``); flags
        are made once per distinct pad shape.
        """
        anchors = torch.cat(
            self.prior_generator.grid_priors(featmap_sizes, device=device))
        shapes = [
            tuple(meta.get('pad_shape', meta['img_shape'])[:2])
            for meta in batch_img_metas
        ]
        flags = {
            shape: torch.cat(
                self.prior_generator.valid_flags(featmap_sizes, shape,
                                                 device))
            for shape in dict.fromkeys(shapes)
        }
        valid = torch.stack([flags[shape] for shape in shapes])
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

    def get_priors(self, featmap_sizes, batch_img_metas, device):
        """Hook: ``(priors (N, 4), valid (B, N), num_level_priors)``."""
        anchors, valid = self.get_anchors(featmap_sizes, batch_img_metas,
                                          device)
        num_level_priors = [
            int(h) * int(w) * a
            for (h, w), a in zip(featmap_sizes, self.num_base_priors)
        ]
        return anchors, valid, num_level_priors

    # ------------------------------------------------------------- targets
    def assign(self, priors: Tensor, valid: Tensor, gts: PaddedGts,
               num_level_priors: Optional[List[int]] = None):
        """Hook: the batched ``AssignResult`` of ``priors`` (``(B, N)``)."""
        return self.assigner.assign_batch(
            priors, gts.bboxes, gts.labels, gt_valid=gts.valid,
            priors_valid=valid, gt_bboxes_ignore=gts.ignore_bboxes,
            ignore_valid=gts.ignore_valid)

    def get_targets(self, priors: Tensor, valid: Tensor, gts: PaddedGts,
                    batch_img_metas: Optional[List[dict]] = None,
                    num_level_priors: Optional[List[int]] = None) -> dict:
        """Hook: classification and regression targets of every prior.

        Args:
            priors: ``(N, 4)`` shared by the batch.
            valid: ``(B, N)`` priors that take part.
            gts: the batch's padded ground truths (:func:`pad_gts`).

        Returns:
            dict: ``labels (B, N)`` (``num_classes`` = background),
            ``label_weights (B, N)``, ``bbox_targets (B, N, 4)``,
            ``bbox_weights (B, N, 4)``, ``pos_mask``, ``neg_mask`` and
            ``avg_factor`` (float: the sampler's normaliser, see
            docs/anchor_head.md).
        """
        assign = self.assign(priors, valid, gts, num_level_priors)
        pos_mask, neg_mask = self.sampler.sample_batch(assign)
        targets = sampled_targets(
            priors, gts.bboxes, assign, pos_mask, neg_mask,
            num_classes=self.num_classes, bbox_coder=self.bbox_coder,
            reg_decoded_bbox=self.reg_decoded_bbox,
            pos_weight=self.train_cfg.get('pos_weight', -1),
            class_agnostic=self.class_agnostic)
        targets.update(pos_mask=pos_mask, neg_mask=neg_mask,
                       avg_factor=self.sampler.avg_factor(pos_mask, neg_mask))
        return targets

    # --------------------------------------------------------------- losses
    def loss_by_feat(self,
                     cls_scores: List[Tensor],
                     bbox_preds: List[Tensor],
                     batch_gt_instances: List[InstanceData],
                     batch_img_metas: List[dict],
                     batch_gt_instances_ignore=None,
                     score_factors: Optional[List[Tensor]] = None) -> dict:
        """The named losses over all priors of the batch (see the module
        docstring for the hooks).

        Equal to the sum of mmdetection's per-level losses: both are sums
        over priors divided by the same ``avg_factor``.
        """
        device = cls_scores[0].device
        featmap_sizes = [s.shape[-2:] for s in cls_scores]
        priors, valid, num_level_priors = self.get_priors(
            featmap_sizes, batch_img_metas, device)
        gts = pad_gts(batch_gt_instances, batch_gt_instances_ignore, device)
        targets = self.get_targets(priors, valid, gts, batch_img_metas,
                                   num_level_priors)
        cls_score = levels_to_images(cls_scores, self.cls_out_channels)
        bbox_pred = levels_to_images(bbox_preds, self.bbox_coder.encode_size)
        losses = {
            self.loss_names['cls']: self.loss_cls_term(cls_score, targets),
            self.loss_names['bbox']: self.loss_bbox_term(
                bbox_pred, priors, targets),
        }
        if score_factors is not None:
            losses[self.loss_names['score_factor']] = \
                self.loss_score_factor_term(
                    levels_to_images(score_factors, 1)[..., 0], priors,
                    targets)
        return losses

    def loss_cls_term(self, cls_score: Tensor, targets: dict) -> Tensor:
        """Hook: ``loss_cls`` over all priors / ``avg_factor``."""
        return self.loss_cls(
            cls_score.reshape(-1, self.cls_out_channels),
            targets['labels'].reshape(-1),
            targets['label_weights'].reshape(-1),
            avg_factor=targets['avg_factor'])

    def loss_bbox_term(self, bbox_pred: Tensor, priors: Tensor,
                       targets: dict) -> Tensor:
        """Hook: ``loss_bbox`` over all priors (weight 0 off the
        positives) / ``avg_factor``; decoded boxes against ground-truth
        boxes with ``reg_decoded_bbox``."""
        pred = bbox_pred.reshape(-1, self.bbox_coder.encode_size)
        if self.reg_decoded_bbox:
            pred = self.bbox_coder.decode(
                priors.expand(bbox_pred.size(0), -1, -1).reshape(
                    -1, priors.size(-1)), pred)
        return self.loss_bbox(
            pred,
            targets['bbox_targets'].reshape(-1, 4),
            targets['bbox_weights'].reshape(-1, 4),
            avg_factor=targets['avg_factor'])

    def loss_score_factor_term(self, score_factor: Tensor, priors: Tensor,
                               targets: dict) -> Tensor:
        """Hook: the loss of a third output ``score_factor (B, N)``."""
        raise NotImplementedError(
            f'{type(self).__name__} got score_factors but defines no '
            'loss_score_factor_term for them')
