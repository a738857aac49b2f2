"""The R-CNN box head: classify each RoI and refine its box
(docs/faster_rcnn.md).

Classification is a softmax over ``num_classes + 1`` with background as the
last class. Regression predicts deltas (``DeltaXYWHBBoxCoder``, stds
``(0.1, 0.1, 0.2, 0.2)``) per class (``(R, 4 * C)``, class ``c`` at columns
``4c..4c+3``) or, with ``reg_class_agnostic``, once (``(R, 4)``). Targets,
losses and decoding are batched over all RoIs of all images (targets with
the dense heads' rule, on the padded ``(B, M)`` candidates); only the final
per-class NMS runs image by image.
"""
from typing import List, Optional, Sequence, Tuple

import torch
import torch.nn as nn
import torch.nn.functional as F
from mmengine.config import ConfigDict
from mmengine.model import BaseModule
from mmengine.structures import InstanceData
from torch import Tensor

from ....registry import MODELS, TASK_UTILS
from ...layers import multiclass_nms
from ...losses import accuracy
from ...utils import empty_instances, sampled_targets, upcast_low_precision


def _check_linear(cfg: dict, key: str) -> None:
    if dict(cfg).get('type', 'Linear') != 'Linear':
        raise ValueError(f'BBoxHead: {key} type {cfg["type"]!r} is not '
                         "supported; use dict(type='Linear')")


@MODELS.register_module()
class BBoxHead(BaseModule):
    """RoI features -> class scores and box deltas, with one ``fc_cls`` and
    one ``fc_reg`` on the flattened (or average-pooled) features.

    Args:
        with_avg_pool: average-pool the ``roi_feat_size`` map first.
        with_cls, with_reg: build the classifier / the regressor.
        roi_feat_size: side of the pooled RoI features.
        in_channels: channels of the RoI features.
        num_classes: foreground classes (background is ``num_classes``).
        bbox_coder: TASK_UTILS config.
        predict_box_type: only ``'hbox'``.
        reg_class_agnostic: one box per RoI instead of one per class.
        reg_decoded_bbox: regress decoded boxes (IoU-style losses).
        reg_predictor_cfg, cls_predictor_cfg: only ``dict(type='Linear')``.
        loss_cls, loss_bbox: MODELS configs.
        init_cfg: default Normal(0, 0.01) for ``fc_cls``, Normal(0, 0.001)
            for ``fc_reg``, biases 0.
    """

    def __init__(self,
                 with_avg_pool: bool = False,
                 with_cls: bool = True,
                 with_reg: bool = True,
                 roi_feat_size: int = 7,
                 in_channels: int = 256,
                 num_classes: int = 80,
                 bbox_coder: dict = dict(
                     type='DeltaXYWHBBoxCoder',
                     clip_border=True,
                     target_means=[0., 0., 0., 0.],
                     target_stds=[0.1, 0.1, 0.2, 0.2]),
                 predict_box_type: str = 'hbox',
                 reg_class_agnostic: bool = False,
                 reg_decoded_bbox: bool = False,
                 reg_predictor_cfg: dict = dict(type='Linear'),
                 cls_predictor_cfg: dict = dict(type='Linear'),
                 loss_cls: dict = dict(
                     type='CrossEntropyLoss',
                     use_sigmoid=False,
                     loss_weight=1.0),
                 loss_bbox: dict = dict(
                     type='SmoothL1Loss', beta=1.0, loss_weight=1.0),
                 init_cfg=None):
        super().__init__(init_cfg=init_cfg)
        if not (with_cls or with_reg):
            raise ValueError('BBoxHead: with_cls and with_reg are both False;'
                             ' the head would predict nothing')
        if predict_box_type != 'hbox':
            raise ValueError(f'BBoxHead: predict_box_type '
                             f"{predict_box_type!r} is not supported; use "
                             "'hbox'")
        if dict(loss_cls).get('use_sigmoid', False):
            raise ValueError('BBoxHead: loss_cls must be a softmax loss '
                             '(use_sigmoid=False); the head predicts '
                             'num_classes + 1 scores with background last')
        _check_linear(reg_predictor_cfg, 'reg_predictor_cfg')
        _check_linear(cls_predictor_cfg, 'cls_predictor_cfg')
        self.with_avg_pool = with_avg_pool
        self.with_cls = with_cls
        self.with_reg = with_reg
        self.roi_feat_size = (roi_feat_size, roi_feat_size) if isinstance(
            roi_feat_size, int) else tuple(roi_feat_size)
        self.roi_feat_area = self.roi_feat_size[0] * self.roi_feat_size[1]
        self.in_channels = in_channels
        self.num_classes = num_classes
        self.predict_box_type = predict_box_type
        self.reg_class_agnostic = reg_class_agnostic
        self.reg_decoded_bbox = reg_decoded_bbox
        self.bbox_coder = TASK_UTILS.build(bbox_coder)
        self.loss_cls = MODELS.build(loss_cls)
        self.loss_bbox = MODELS.build(loss_bbox)
        if init_cfg is None:
            self.init_cfg = []
            if with_cls:
                self.init_cfg.append(
                    dict(type='Normal', std=0.01, override=dict(
                        name='fc_cls')))
            if with_reg:
                self.init_cfg.append(
                    dict(type='Normal', std=0.001, override=dict(
                        name='fc_reg')))
        self._init_layers()

    @property
    def reg_out_channels(self) -> int:
        """4 (class-agnostic) or ``4 * num_classes``."""
        size = self.bbox_coder.encode_size
        return size if self.reg_class_agnostic else size * self.num_classes

    def _init_layers(self) -> None:
        in_features = self.in_channels
        if self.with_avg_pool:
            self.avg_pool = nn.AvgPool2d(self.roi_feat_size)
        else:
            in_features *= self.roi_feat_area
        self._init_predictors(in_features, in_features)

    def _init_predictors(self, cls_in: int, reg_in: int) -> None:
        """``fc_cls`` (``num_classes + 1`` outputs) and ``fc_reg``."""
        if self.with_cls:
            self.fc_cls = nn.Linear(cls_in, self.num_classes + 1)
        if self.with_reg:
            self.fc_reg = nn.Linear(reg_in, self.reg_out_channels)

    def forward(self, x: Tensor) -> Tuple[Optional[Tensor], Optional[Tensor]]:
        """``x (R, C, h, w)`` -> ``cls_score (R, num_classes + 1)`` and
        ``bbox_pred (R, 4 * num_classes)`` (or ``(R, 4)``)."""
        if self.with_avg_pool:
            x = self.avg_pool(x)
        x = x.flatten(1)
        cls_score = self.fc_cls(x) if self.with_cls else None
        bbox_pred = self.fc_reg(x) if self.with_reg else None
        return cls_score, bbox_pred

    # ------------------------------------------------------------- targets
    def get_targets(self, priors: Tensor, gt_bboxes: Tensor, assign_result,
                    pos_mask: Tensor, neg_mask: Tensor,
                    rcnn_train_cfg) -> dict:
        """Targets of every candidate RoI of the batch, in the padded layout
        (the dense heads' target rule, :func:`sampled_targets`).

        Args:
            priors: ``(B, M, 4)`` candidates (``[gts ; proposals]``).
            gt_bboxes: ``(B, G, 4)`` padded ground truths.
            assign_result: batched ``AssignResult`` over the candidates.
            pos_mask, neg_mask: ``(B, M)`` bool, the sampled RoIs.
            rcnn_train_cfg: ``pos_weight`` (or None).

        Returns:
            dict: ``labels (B, M)`` (``num_classes`` for negatives),
            ``label_weights (B, M)``, ``bbox_targets (B, M, 4)``,
            ``bbox_weights (B, M, 4)``; 0 weights off the sampled RoIs.
        """
        return sampled_targets(
            priors, gt_bboxes, assign_result, pos_mask, neg_mask,
            num_classes=self.num_classes, bbox_coder=self.bbox_coder,
            reg_decoded_bbox=self.reg_decoded_bbox,
            pos_weight=(rcnn_train_cfg or {}).get('pos_weight', -1))

    # --------------------------------------------------------------- losses
    def loss_and_target(self,
                        cls_score: Tensor,
                        bbox_pred: Tensor,
                        rois: Tensor,
                        sampling_results,
                        rcnn_train_cfg,
                        reduction_override: Optional[str] = None) -> dict:
        """Losses of the sampled RoIs ``rois (R, 5)`` in RoI order (see
        ``BatchSamplingResult.roi_index``):
        ``dict(loss_bbox={loss_cls, acc, loss_bbox}, bbox_targets=(labels,
        label_weights, bbox_targets, bbox_weights))``, each target ``(R,
        ...)`` (mmdetection's return layout)."""
        res = sampling_results
        padded = self.get_targets(res.priors, res.gt_bboxes,
                                  res.assign_result, res.pos_mask,
                                  res.neg_mask, rcnn_train_cfg)
        img, cand = res.roi_index()
        targets = tuple(padded[key][img, cand] for key in (
            'labels', 'label_weights', 'bbox_targets', 'bbox_weights'))
        losses = self.loss(cls_score, bbox_pred, rois, *targets,
                           reduction_override=reduction_override)
        return dict(loss_bbox=losses, bbox_targets=targets)

    def loss(self,
             cls_score: Optional[Tensor],
             bbox_pred: Optional[Tensor],
             rois: Tensor,
             labels: Tensor,
             label_weights: Tensor,
             bbox_targets: Tensor,
             bbox_weights: Tensor,
             reduction_override: Optional[str] = None) -> dict:
        """``loss_cls`` (CE summed over RoIs / number of weighted RoIs),
        ``acc`` (%) and ``loss_bbox`` (summed over the positives' 4 deltas
        of their own class / all sampled RoIs ``R``; 0 without positives).
        """
        losses = dict()
        if cls_score is not None:
            # max(#weighted RoIs, 1) as a 0-d tensor: no host sync, the
            # same quotient as the number as a Python float.
            avg_factor = (label_weights > 0).sum().clamp(min=1).float()
            if cls_score.numel() > 0:
                losses['loss_cls'] = self.loss_cls(
                    cls_score,
                    labels,
                    label_weights,
                    avg_factor=avg_factor,
                    reduction_override=reduction_override)
                losses['acc'] = accuracy(cls_score, labels)
        if bbox_pred is not None:
            pos = (labels >= 0) & (labels < self.num_classes)
            if bool(pos.any()):
                if self.reg_decoded_bbox:
                    bbox_pred = self.bbox_coder.decode(rois[:, 1:],
                                                       bbox_pred)
                pred = bbox_pred.reshape(bbox_pred.size(0), -1, 4)[pos]
                if not self.reg_class_agnostic:
                    # The deltas predicted for each positive's own class.
                    pred = pred[torch.arange(pred.size(0)), labels[pos]]
                else:
                    pred = pred[:, 0]
                losses['loss_bbox'] = self.loss_bbox(
                    pred,
                    bbox_targets[pos],
                    bbox_weights[pos],
                    avg_factor=bbox_targets.size(0),
                    reduction_override=reduction_override)
            else:
                losses['loss_bbox'] = bbox_pred[pos].sum()
        return losses

    # ------------------------------------------------------------- predict
    def predict_by_feat(self,
                        rois: Sequence[Tensor],
                        cls_scores: Sequence[Tensor],
                        bbox_preds: Sequence[Optional[Tensor]],
                        batch_img_metas: List[dict],
                        rcnn_test_cfg: Optional[ConfigDict] = None,
                        rescale: bool = False) -> List[InstanceData]:
        """Detections per image from per-image ``rois (R_i, 5)``,
        ``cls_scores (R_i, C + 1)`` and ``bbox_preds (R_i, 4C)``.

        Without ``rcnn_test_cfg`` the results hold every RoI's class boxes
        ``bboxes (R_i, 4C)`` and ``scores (R_i, C + 1)``; with it, the
        output of ``multiclass_nms``: ``bboxes (K, 4)``, ``scores (K,)``,
        ``labels (K,)`` by descending score.
        """
        counts = [len(r) for r in rois]
        # fp16/bf16 inference: softmax and decoding in float32.
        rois = upcast_low_precision(rois)
        cls_scores = upcast_low_precision(cls_scores)
        bbox_preds = upcast_low_precision(bbox_preds)
        all_rois = torch.cat(list(rois))
        device = all_rois.device
        if all_rois.size(0) == 0:
            return [empty_instances(device) for _ in counts]
        scores = F.softmax(torch.cat(list(cls_scores)), dim=-1)
        img_idx = torch.arange(
            len(counts), device=device).repeat_interleave(
                torch.tensor(counts, device=device))
        shapes = all_rois.new_tensor(
            [meta['img_shape'][:2] for meta in batch_img_metas]
        ).reshape(-1, 2)[img_idx]  # (R, 2) = (h, w) of each RoI's image
        if bbox_preds[0] is not None:
            boxes = self.bbox_coder.decode(all_rois[:, 1:],
                                           torch.cat(list(bbox_preds)))
            if getattr(self.bbox_coder, 'clip_border', True):
                boxes = _clip_per_row(boxes, shapes)
        else:
            # Without regression the RoIs are the boxes; mmdetection's clip
            # of this case acts on a copy, so the RoIs stay unclipped.
            boxes = all_rois[:, 1:].clone()
        if rescale and boxes.numel() > 0:
            # mmdetection multiplies by the float32 reciprocal.
            factors = all_rois.new_tensor(
                [[1 / s for s in meta['scale_factor']] * 2
                 for meta in batch_img_metas]).reshape(-1, 4)[img_idx]
            boxes = (boxes.reshape(boxes.size(0), -1, 4) *
                     factors[:, None]).reshape(boxes.shape)

        results_list = []
        for img_boxes, img_scores in zip(boxes.split(counts),
                                         scores.split(counts)):
            if img_boxes.size(0) == 0:
                results_list.append(empty_instances(device))
                continue
            if rcnn_test_cfg is None:
                results_list.append(
                    InstanceData(bboxes=img_boxes, scores=img_scores))
                continue
            dets, labels = multiclass_nms(img_boxes, img_scores,
                                          rcnn_test_cfg['score_thr'],
                                          rcnn_test_cfg['nms'],
                                          rcnn_test_cfg['max_per_img'])
            results_list.append(
                InstanceData(
                    bboxes=dets[:, :-1], scores=dets[:, -1], labels=labels))
        return results_list


def _clip_per_row(boxes: Tensor, shapes: Tensor) -> Tensor:
    """Clip ``boxes (R, 4K)`` to each row's image ``shapes (R, 2) = (h,
    w)``: x to ``[0, w]``, y to ``[0, h]``."""
    boxes = boxes.reshape(boxes.size(0), -1, 2, 2)  # (R, K, corner, xy)
    bounds = shapes.flip(-1)[:, None, None, :]  # (R, 1, 1, (w, h))
    clipped = torch.minimum(boxes.clamp(min=0), bounds)
    return clipped.reshape(clipped.size(0), -1)
