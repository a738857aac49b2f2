"""FCOS's head (Tian et al., FCOS: Fully Convolutional One-Stage Object
Detection, 2019; docs/fcos.md).

No anchors: every location of every FPN level is a point ``(x, y)`` (input
pixels, :class:`MlvlPointGenerator`) that predicts class scores, the four
distances ``(l, t, r, b)`` to the sides of its box and a centerness logit.
The head is :class:`AnchorHead`'s skeleton with points as priors; it
overrides the hooks

* ``get_priors``: the points of all levels, all valid (every point of the
  padded batch takes part, as in mmdetection);
* ``get_targets``: :func:`fcos_targets`, the target rule for the whole
  batch in one program, plus the centerness targets and the normalisers;
* ``loss_bbox_term``: the IoU loss of the positives' decoded boxes,
  weighted by their centerness targets;
* ``loss_score_factor_term``: the centerness BCE.

Normalisation (mmdetection's; ``reduce_mean`` averages over DDP ranks):
``num_pos = max(reduce_mean(#positives of the batch), 1)`` divides the
classification and centerness losses, ``max(reduce_mean(sum of the
positives' centerness targets), 1e-6)`` the box loss. mmdetection flattens
the batch level-major (level, image, point), detkit image-major (image,
level, point): the same terms, so the sums differ only in the order of
their float additions.
"""
from typing import List, Optional, Sequence

import torch
import torch.nn as nn
from torch import Tensor

from ...registry import MODELS
from ..layers import ConvModule, Scale
from ..utils import PaddedGts, reduce_mean
from .anchor_head import AnchorHead

# mmdetection's "no candidate" area; also the top of the last regress range.
INF = 1e8


def conv_tower(in_channels: int, feat_channels: int, num_convs: int,
               conv_cfg=None, norm_cfg=None, bias='auto') -> nn.ModuleList:
    """``num_convs`` 3x3 ConvModules (conv, norm, ReLU), the first from
    ``in_channels``: one classification or regression tower of FCOS / ATSS
    (mmdetection's ``cls_convs`` / ``reg_convs`` keys)."""
    return nn.ModuleList(
        ConvModule(in_channels if i == 0 else feat_channels, feat_channels, 3,
                   stride=1, padding=1, conv_cfg=conv_cfg, norm_cfg=norm_cfg,
                   bias=bias) for i in range(num_convs))


def centerness_target(distances: Tensor) -> Tensor:
    """``sqrt(min(l, r) / max(l, r) * min(t, b) / max(t, b))`` of
    ``distances (..., 4)`` = ``(l, t, r, b)`` (positive: from a point inside
    its box). 1 at the box centre, 0 on its sides."""
    left_right = distances[..., [0, 2]]
    top_bottom = distances[..., [1, 3]]
    return torch.sqrt(
        (left_right.min(-1)[0] / left_right.max(-1)[0]) *
        (top_bottom.min(-1)[0] / top_bottom.max(-1)[0]))


def fcos_targets(points: Tensor, regress_ranges: Tensor,
                 radii: Optional[Tensor], gts: PaddedGts, num_classes: int):
    """FCOS's target rule for a batch: labels and distances of every point.

    For point ``p`` and ground truth ``g`` with ``(l, t, r, b)`` the
    distances from ``p`` to the sides of ``g``, ``g`` is a candidate of
    ``p`` when

    1. ``p`` is inside ``g``: ``min(l, t, r, b) > 0``; with centre sampling
       (``radii`` given) ``p`` must instead be strictly inside the square
       of half-side ``radii[p]`` around ``g``'s centre, clipped to ``g``;
    2. ``g``'s size suits ``p``'s level: ``lo <= max(l, t, r, b) <= hi``.

    The point takes the candidate of smallest area (the first on ties);
    without candidate it is background. mmdetection loops over images with
    an ``(N, G)`` program; here ``(B, N, G)`` tensors carry the batch, with
    padded ground truths never candidates, element by element the same
    arithmetic (tests/test_models/test_dense_heads/test_fcos_head.py checks
    it bit for bit against a per-image loop).

    Args:
        points: ``(N, 2)`` ``(x, y)`` of all levels.
        regress_ranges: ``(N, 2)`` float32 ``(lo, hi)`` of each point's level.
        radii: ``(N,)`` centre-sampling half-sides (``stride *
            center_sample_radius``), or None without centre sampling.
        gts: padded ground truths ``(B, G, 4)``.

    Returns:
        tuple: ``labels (B, N)`` long (``num_classes`` = background) and
        ``distances (B, N, 4)`` to the chosen ground truth (to the first
        one for background points of an image with ground truths, 0 in an
        image without, as mmdetection leaves them).
    """
    num_imgs, num_gts = gts.valid.shape
    num_points = points.size(0)
    if num_gts == 0:
        return (gts.labels.new_full((num_imgs, num_points), num_classes),
                points.new_zeros((num_imgs, num_points, 4)))
    xs, ys = points[None, :, 0, None], points[None, :, 1, None]  # (1, N, 1)
    x1, y1, x2, y2 = (gts.bboxes[:, None, :, i] for i in range(4))  # (B,1,G)
    sides = (xs - x1, ys - y1, x2 - xs, y2 - ys)  # each (B, N, G)
    if radii is None:
        inside = _min4(*sides) > 0
    else:
        radius = radii[None, :, None]
        cx, cy = (x1 + x2) / 2, (y1 + y2) / 2
        cx1, cy1 = cx - radius, cy - radius
        cx2, cy2 = cx + radius, cy + radius
        # The centre square clipped to the box, as mmdetection clips it.
        cx1 = torch.where(cx1 > x1, cx1, x1)
        cy1 = torch.where(cy1 > y1, cy1, y1)
        cx2 = torch.where(cx2 > x2, x2, cx2)
        cy2 = torch.where(cy2 > y2, y2, cy2)
        inside = _min4(xs - cx1, ys - cy1, cx2 - xs, cy2 - ys) > 0
    reach = _max4(*sides)
    in_range = ((reach >= regress_ranges[None, :, 0, None])
                & (reach <= regress_ranges[None, :, 1, None]))
    areas = (x2 - x1) * (y2 - y1)
    candidate = inside & in_range & gts.valid[:, None, :]
    areas = torch.where(candidate, areas, areas.new_tensor(INF))
    min_area, gt_idx = areas.min(dim=2)  # (B, N)
    labels = gts.labels.gather(1, gt_idx)
    labels = labels.masked_fill(min_area == INF, num_classes)
    distances = torch.stack(
        [side.gather(2, gt_idx[..., None])[..., 0] for side in sides], -1)
    no_gt = ~gts.valid.any(1)
    if bool(no_gt.any()):
        distances = distances.masked_fill(no_gt[:, None, None], 0)
    return labels, distances


def _min4(a, b, c, d):
    return torch.minimum(torch.minimum(a, b), torch.minimum(c, d))


def _max4(a, b, c, d):
    return torch.maximum(torch.maximum(a, b), torch.maximum(c, d))


@MODELS.register_module()
class FCOSHead(AnchorHead):
    """FCOS head with mmdetection's arguments, defaults and layer names
    (``cls_convs``, ``reg_convs``, ``conv_cls``, ``conv_reg``,
    ``conv_centerness``, ``scales``).

    Args:
        num_classes: foreground classes (sigmoid scores).
        in_channels: channels of every FPN level.
        feat_channels, stacked_convs: tower width and depth.
        strides: one per FPN level (the configs pass 8 to 128).
        regress_ranges: per level ``(lo, hi)`` of ``max(l, t, r, b)``.
        center_sampling, center_sample_radius: positives only within
            ``radius * stride`` of a box's centre.
        norm_on_bbox: regress distances in units of the level's stride,
            with ``max(x, 0)`` instead of ``exp(x)``.
        centerness_on_reg: centerness from the regression tower.
        dcn_on_last_conv: must be False (DCN needs compiled ops).
        conv_bias: bias of the tower convs (``'auto'``: none under a norm).
        loss_cls, loss_bbox, loss_centerness: MODELS configs.
        bbox_coder: TASK_UTILS config (``DistancePointBBoxCoder``).
        conv_cfg, norm_cfg: of the tower convs.
        train_cfg: unused by the FCOS rule (kept: an RPN's train_cfg
            carries an assigner that FCOS does not use).
        test_cfg: ``nms_pre``, ``score_thr``, ``nms``, ``max_per_img``,
            ``min_bbox_size``.
    """

    def __init__(self,
                 num_classes: int,
                 in_channels: int,
                 feat_channels: int = 256,
                 stacked_convs: int = 4,
                 strides: Sequence[int] = (4, 8, 16, 32, 64),
                 regress_ranges: Sequence[tuple] = ((-1, 64), (64, 128),
                                                    (128, 256), (256, 512),
                                                    (512, INF)),
                 center_sampling: bool = False,
                 center_sample_radius: float = 1.5,
                 norm_on_bbox: bool = False,
                 centerness_on_reg: bool = False,
                 dcn_on_last_conv: bool = False,
                 conv_bias='auto',
                 loss_cls: dict = dict(type='FocalLoss', use_sigmoid=True,
                                       gamma=2.0, alpha=0.25,
                                       loss_weight=1.0),
                 loss_bbox: dict = dict(type='IoULoss', loss_weight=1.0),
                 loss_centerness: dict = dict(type='CrossEntropyLoss',
                                              use_sigmoid=True,
                                              loss_weight=1.0),
                 bbox_coder: dict = dict(type='DistancePointBBoxCoder'),
                 conv_cfg=None,
                 norm_cfg=dict(type='GN', num_groups=32, requires_grad=True),
                 train_cfg=None,
                 test_cfg=None,
                 init_cfg=dict(type='Normal', layer='Conv2d', std=0.01,
                               override=dict(type='Normal', name='conv_cls',
                                             std=0.01, bias_prob=0.01))):
        if dcn_on_last_conv:
            raise NotImplementedError(
                'FCOSHead: dcn_on_last_conv=True makes the last tower conv '
                'a deformable convolution (DCNv2), which needs compiled ops '
                'that detkit does not ship; set bbox_head.dcn_on_last_conv='
                'False (the *-dcn-* FCOS configs cannot run in detkit)')
        if len(regress_ranges) != len(strides):
            raise ValueError(
                f'FCOSHead: regress_ranges has {len(regress_ranges)} '
                f'entries for {len(strides)} strides; give one (lo, hi) '
                'per FPN level')
        self.strides = list(strides)
        self.regress_ranges = [tuple(r) for r in regress_ranges]
        self.stacked_convs = stacked_convs
        self.center_sampling = center_sampling
        self.center_sample_radius = center_sample_radius
        self.norm_on_bbox = norm_on_bbox
        self.centerness_on_reg = centerness_on_reg
        self.dcn_on_last_conv = dcn_on_last_conv
        self.conv_bias = conv_bias
        self.conv_cfg = conv_cfg
        self.norm_cfg = norm_cfg
        # No train_cfg for AnchorHead: FCOS builds no assigner or sampler.
        super().__init__(
            num_classes, in_channels, feat_channels=feat_channels,
            anchor_generator=dict(type='MlvlPointGenerator',
                                  strides=self.strides),
            bbox_coder=bbox_coder, loss_cls=loss_cls, loss_bbox=loss_bbox,
            test_cfg=test_cfg, init_cfg=init_cfg)
        self.train_cfg = train_cfg
        self.loss_centerness = MODELS.build(loss_centerness)

    def _init_layers(self) -> None:
        tower = (self.in_channels, self.feat_channels, self.stacked_convs,
                 self.conv_cfg, self.norm_cfg, self.conv_bias)
        self.cls_convs = conv_tower(*tower)
        self.reg_convs = conv_tower(*tower)
        self.conv_cls = nn.Conv2d(self.feat_channels, self.cls_out_channels,
                                  3, padding=1)
        self.conv_reg = nn.Conv2d(self.feat_channels, 4, 3, padding=1)
        self.conv_centerness = nn.Conv2d(self.feat_channels, 1, 3, padding=1)
        self.scales = nn.ModuleList(Scale(1.0) for _ in self.strides)

    def forward(self, x):
        """``(cls_scores, bbox_preds, centernesses)``, per level ``(B, C,
        H, W)``, ``(B, 4, H, W)`` float32 distances, ``(B, 1, H, W)``."""
        outs = [self.forward_single(feat, scale, stride)
                for feat, scale, stride in zip(x, self.scales, self.strides)]
        return tuple(list(level_outs) for level_outs in zip(*outs))

    def forward_single(self, x: Tensor, scale: Scale, stride: int):
        cls_feat, reg_feat = x, x
        for conv in self.cls_convs:
            cls_feat = conv(cls_feat)
        for conv in self.reg_convs:
            reg_feat = conv(reg_feat)
        centerness = self.conv_centerness(
            reg_feat if self.centerness_on_reg else cls_feat)
        # float32 so that exp cannot overflow under fp16.
        bbox_pred = scale(self.conv_reg(reg_feat)).float()
        if self.norm_on_bbox:
            # Trained in stride units; predictions in pixels.
            bbox_pred = bbox_pred.clamp(min=0)
            if not self.training:
                bbox_pred = bbox_pred * stride
        else:
            bbox_pred = bbox_pred.exp()
        return self.conv_cls(cls_feat), bbox_pred, centerness

    # -------------------------------------------------------------- targets
    def get_priors(self, featmap_sizes, batch_img_metas, device):
        """Hook: points ``(N, 2)`` of all levels, all valid."""
        points = self.prior_generator.grid_priors(featmap_sizes,
                                                  device=device)
        valid = torch.ones((len(batch_img_metas), sum(map(len, points))),
                           dtype=torch.bool, device=device)
        return torch.cat(points), valid, [len(p) for p in points]

    def get_targets(self, priors: Tensor, valid: Tensor, gts: PaddedGts,
                    batch_img_metas: Optional[List[dict]] = None,
                    num_level_priors: Optional[List[int]] = None) -> dict:
        """Hook: :func:`fcos_targets` plus what the losses need.

        Returns:
            dict: ``labels (B, N)`` (0 for every positive when the head is
            an RPN), ``label_weights (B, N)`` (all 1), ``bbox_targets (B,
            N, 4)`` distances (in stride units with ``norm_on_bbox``),
            ``bbox_weights (B, N, 4)``, ``pos_mask``, ``neg_mask``,
            ``centerness_targets (B, N)`` (0 off the positives),
            ``avg_factor`` (``num_pos``) and ``centerness_denorm``.
        """
        def per_point(values):
            # one value (or (lo, hi) pair) per level -> one per point
            return priors.new_tensor(values).repeat_interleave(
                torch.tensor(num_level_priors, device=priors.device), dim=0)

        radii = (per_point([s * self.center_sample_radius
                            for s in self.strides])
                 if self.center_sampling else None)
        if self.class_agnostic:  # an RPN: every object is class 0
            gts = gts._replace(labels=torch.zeros_like(gts.labels))
        labels, distances = fcos_targets(
            priors, per_point(self.regress_ranges), radii, gts,
            self.num_classes)
        if self.norm_on_bbox:
            distances = distances / per_point(self.strides)[None, :, None]
        pos_mask = labels < self.num_classes
        num_pos = max(reduce_mean(pos_mask.sum().float()), 1.0)
        pos_centerness = centerness_target(distances[pos_mask])
        centerness_targets = distances.new_zeros(pos_mask.shape)
        centerness_targets[pos_mask] = pos_centerness
        centerness_denorm = max(reduce_mean(pos_centerness.sum().detach()),
                                1e-6)
        return dict(
            labels=labels, label_weights=torch.ones_like(distances[..., 0]),
            bbox_targets=distances,
            bbox_weights=pos_mask[..., None].expand_as(distances).float(),
            pos_mask=pos_mask, neg_mask=~pos_mask,
            centerness_targets=centerness_targets, avg_factor=num_pos,
            centerness_denorm=centerness_denorm)

    # --------------------------------------------------------------- losses
    def loss_by_feat(self, cls_scores, bbox_preds, centernesses,
                     batch_gt_instances, batch_img_metas,
                     batch_gt_instances_ignore=None) -> dict:
        """``loss_cls``, ``loss_bbox``, ``loss_centerness`` (ignored boxes
        play no part in FCOS)."""
        return super().loss_by_feat(cls_scores, bbox_preds,
                                    batch_gt_instances, batch_img_metas,
                                    score_factors=centernesses)

    def loss_bbox_term(self, bbox_pred: Tensor, priors: Tensor,
                       targets: dict) -> Tensor:
        """Hook: the box loss of the positives' boxes, decoded from their
        points (no clipping), weighted by the centerness targets and
        divided by ``centerness_denorm``; 0 without positives."""
        img, idx = targets['pos_mask'].nonzero(as_tuple=True)
        pos_pred = bbox_pred[img, idx]
        if img.numel() == 0:
            return pos_pred.sum()
        points = priors[idx]
        return self.loss_bbox(
            self.bbox_coder.decode(points, pos_pred),
            self.bbox_coder.decode(points, targets['bbox_targets'][img, idx]),
            weight=targets['centerness_targets'][img, idx],
            avg_factor=targets['centerness_denorm'])

    def loss_score_factor_term(self, score_factor: Tensor, priors: Tensor,
                               targets: dict) -> Tensor:
        """Hook: BCE of the positives' centerness logits against their
        targets, over ``num_pos``; 0 without positives."""
        pos_logits = score_factor[targets['pos_mask']]
        if pos_logits.numel() == 0:
            return pos_logits.sum()
        return self.loss_centerness(
            pos_logits, targets['centerness_targets'][targets['pos_mask']],
            avg_factor=targets['avg_factor'])
