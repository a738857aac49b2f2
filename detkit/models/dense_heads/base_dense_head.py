"""The dense-head interface and the one prediction program of all dense
heads (docs/dense_prediction.md).

A dense head predicts, for every feature-map location, class scores and box
regressions. ``forward`` maps FPN features to per-level outputs; ``loss``
turns them into a dict of named losses (:class:`AnchorHead`'s skeleton);
``predict`` into per-image detections (``InstanceData`` with ``bboxes (K,
4)`` xyxy, ``scores (K,)``, ``labels (K,)``).

Prediction (:meth:`BaseDenseHead.predict_by_feat`), for RetinaNet, SSD, RPN
and the heads built on them:

1. Per level, the top ``nms_pre`` candidates of every image in one batched
   ``topk``, chosen by ``nms_groups``:

   * ``'class'`` (detections): (prior, class) pairs scoring above
     ``score_thr``, best first;
   * ``'level'`` (proposals, RPN): priors by objectness, no threshold;
     with ``nms_pre`` at or above the level's size all priors in order.

2. All levels' candidates decoded in one call (float32 for fp16/bf16
   outputs). With ``score_factors`` (FCOS / ATSS centerness) each score is
   multiplied by ``sigmoid(score_factor)`` of its prior, after the top-k.
3. Per image (:meth:`bbox_post_process`): rescale to the original image,
   drop boxes not wider and taller than ``min_bbox_size``, NMS within each
   class (``'class'``) or each level (``'level'``), keep ``max_per_img``.

Heads provide ``prior_generator``, ``bbox_coder``, ``cls_out_channels`` and
``use_sigmoid_cls``.
"""
from typing import List, Optional, Tuple

import torch
from mmengine.config import ConfigDict
from mmengine.model import BaseModule
from mmengine.structures import InstanceData
from torch import Tensor

from ..layers import batched_nms
from ..utils import (empty_instances, levels_to_images, unpack_gt_instances,
                     upcast_low_precision)


def topk_per_image(scores: Tensor, score_thr: Optional[float],
                   topk: int) -> Tuple[Tensor, Tensor, Tensor, Tensor]:
    """Keep the top ``topk`` (prior, class) pairs of each image whose score
    is above ``score_thr`` — the whole batch in one ``topk`` call.

    Args:
        scores: ``(B, N, C)`` per prior and class.
        score_thr: pairs must score strictly above it; None for no
            threshold, and then, when ``topk`` keeps everything (``<= 0``
            or ``>= N * C``), all pairs in their order.
        topk: pairs kept per image at most (``<= 0``: all).

    Returns:
        tuple: ``scores (B, K)`` (descending unless all pairs are kept
        unthresholded), ``prior_idx (B, K)``, ``labels (B, K)``, ``valid
        (B, K)`` bool (False for padding when an image has fewer than K
        pairs above the threshold).
    """
    batch, num_priors, num_classes = scores.shape
    flat = scores.reshape(batch, -1)
    if score_thr is None:
        if 0 < topk < flat.size(1):
            top_scores, top_idx = flat.topk(topk, dim=1)
        else:
            top_scores = flat
            top_idx = torch.arange(flat.size(1),
                                   device=flat.device).expand(batch, -1)
        valid = torch.ones_like(top_scores, dtype=torch.bool)
        return (top_scores, top_idx // num_classes, top_idx % num_classes,
                valid)
    k = flat.size(1) if topk <= 0 else min(topk, flat.size(1))
    keep = flat > score_thr
    num_kept = int(keep.sum())
    if num_kept * 4 <= flat.numel():
        # Few pairs pass the threshold (the usual case): rank only those,
        # instead of a top-k over every (prior, class) pair.
        top_scores, top_idx = _topk_of_kept(flat, keep, k)
    else:
        # Pairs at or below the threshold can never be kept: push them to
        # -inf so that topk ranks only surviving pairs, as a
        # filter-then-sort would.
        flat = flat.masked_fill(~keep, float('-inf'))
        top_scores, top_idx = flat.topk(k, dim=1)
    valid = top_scores > float('-inf')
    return top_scores, top_idx // num_classes, top_idx % num_classes, valid


def _topk_of_kept(flat: Tensor, keep: Tensor,
                  k: int) -> Tuple[Tensor, Tensor]:
    """``(B, k)`` descending scores and flat indices of the kept entries of
    each row, padded with ``-inf`` / 0 — for the whole batch at once."""
    img, idx = keep.nonzero(as_tuple=True)  # row-major: grouped by image
    values = flat[img, idx]
    # Descending by score, then (stable) grouped by image again.
    order = values.argsort(descending=True, stable=True)
    order = order[img[order].argsort(stable=True)]
    img, idx, values = img[order], idx[order], values[order]
    counts = torch.bincount(img, minlength=flat.size(0))
    starts = counts.cumsum(0) - counts
    rank = torch.arange(img.numel(), device=flat.device) - starts[img]
    sel = rank < k
    top_scores = flat.new_full((flat.size(0), k), float('-inf'))
    top_idx = torch.zeros((flat.size(0), k), dtype=torch.long,
                          device=flat.device)
    top_scores[img[sel], rank[sel]] = values[sel]
    top_idx[img[sel], rank[sel]] = idx[sel]
    return top_scores, top_idx


class BaseDenseHead(BaseModule):
    """Base of dense heads: the loss / predict entry points and the shared
    prediction program."""

    #: ``'class'``: detections, NMS within each class; ``'level'``:
    #: proposals, NMS within each FPN level (see the module docstring).
    nms_groups = 'class'

    def loss(self, x: Tuple[Tensor], batch_data_samples) -> dict:
        """Losses from neck features and the batch's data samples."""
        outs = self(x)
        gts, ignores, metas = unpack_gt_instances(batch_data_samples)
        return self.loss_by_feat(*outs, gts, metas, ignores)

    def loss_and_predict(self, x: Tuple[Tensor], batch_data_samples,
                         proposal_cfg: Optional[ConfigDict] = None):
        """Losses and (detached) predictions from one forward pass, as the
        RPN of a two-stage detector needs them.

        Returns:
            tuple: ``(losses dict, list[InstanceData])``.
        """
        outs = self(x)
        gts, ignores, metas = unpack_gt_instances(batch_data_samples)
        losses = self.loss_by_feat(*outs, gts, metas, ignores)
        detached = [[t.detach() for t in level_list] for level_list in outs]
        predictions = self.predict_by_feat(
            *detached, batch_img_metas=metas, cfg=proposal_cfg)
        return losses, predictions

    def predict(self,
                x: Tuple[Tensor],
                batch_data_samples,
                rescale: bool = False) -> List[InstanceData]:
        """Detections of each image; with ``rescale`` in original-image
        pixels, else in the resized input's pixels."""
        metas = [sample.metainfo for sample in batch_data_samples]
        outs = self(x)
        return self.predict_by_feat(
            *outs, batch_img_metas=metas, rescale=rescale)

    # ------------------------------------------------------------- predict
    def predict_by_feat(self,
                        cls_scores: List[Tensor],
                        bbox_preds: List[Tensor],
                        score_factors: Optional[List[Tensor]] = None,
                        batch_img_metas: Optional[List[dict]] = None,
                        cfg: Optional[ConfigDict] = None,
                        rescale: bool = False,
                        with_nms: bool = True) -> List[InstanceData]:
        """Detections (or proposals) per image, from per-level
        ``cls_scores (B, A*C, H, W)``, ``bbox_preds (B, A*4, H, W)`` and
        optional ``score_factors (B, A, H, W)``; see the module docstring.
        """
        cfg = ConfigDict(self.test_cfg if cfg is None else cfg)
        proposals = self.nms_groups == 'level'
        if proposals and not with_nms:
            raise ValueError(f'{type(self).__name__}.predict_by_feat: '
                             'proposals always go through NMS '
                             '(with_nms=False is not supported)')
        # fp16/bf16 inference: priors, scores and boxes in float32.
        cls_scores = upcast_low_precision(cls_scores)
        bbox_preds = upcast_low_precision(bbox_preds)
        featmap_sizes = [s.shape[-2:] for s in cls_scores]
        device = cls_scores[0].device
        mlvl_priors = self.prior_generator.grid_priors(
            featmap_sizes, dtype=cls_scores[0].dtype, device=device)
        nms_pre = cfg.get('nms_pre', -1)
        score_thr = None if proposals else cfg.get('score_thr', 0)

        parts = dict(priors=[], deltas=[], scores=[], labels=[], valid=[],
                     level_ids=[], factors=[])
        for level, (cls_score, bbox_pred, priors) in enumerate(
                zip(cls_scores, bbox_preds, mlvl_priors)):
            scores = self._scores_of(
                levels_to_images([cls_score], self.cls_out_channels))
            deltas = levels_to_images([bbox_pred],
                                      self.bbox_coder.encode_size)
            top_scores, prior_idx, labels, valid = topk_per_image(
                scores, score_thr, nms_pre)
            parts['priors'].append(priors[prior_idx])
            parts['deltas'].append(deltas.gather(
                1, prior_idx[..., None].expand(-1, -1, deltas.size(-1))))
            parts['scores'].append(top_scores)
            parts['labels'].append(labels)
            parts['valid'].append(valid)
            parts['level_ids'].append(torch.full_like(prior_idx, level))
            if score_factors is not None:
                factor = levels_to_images(
                    upcast_low_precision([score_factors[level]]), 1)[..., 0]
                parts['factors'].append(factor.sigmoid().gather(1, prior_idx))
        cat = {key: torch.cat(value, 1) for key, value in parts.items()
               if value}
        img_shapes = [meta['img_shape'][:2] for meta in batch_img_metas]
        bboxes = self.bbox_coder.decode(cat['priors'], cat['deltas'],
                                        max_shape=img_shapes)
        scores = cat['scores']
        if 'factors' in cat:
            scores = scores * cat['factors']

        # Each image keeps a different number of boxes from here on.
        results_list = []
        for img_id, meta in enumerate(batch_img_metas):
            keep = cat['valid'][img_id]
            if not bool(keep.any()):
                results_list.append(empty_instances(device))
                continue
            results = InstanceData(
                bboxes=bboxes[img_id][keep],
                scores=scores[img_id][keep],
                labels=cat['labels'][img_id][keep])
            if proposals:
                results.level_ids = cat['level_ids'][img_id][keep]
            results_list.append(
                self.bbox_post_process(results, cfg, rescale, with_nms,
                                       meta))
        return results_list

    def bbox_post_process(self,
                          results: InstanceData,
                          cfg: ConfigDict,
                          rescale: bool = False,
                          with_nms: bool = True,
                          img_meta: Optional[dict] = None) -> InstanceData:
        """Rescale, drop small boxes, NMS and keep ``cfg.max_per_img``.

        ``results`` holds one image's candidates: ``bboxes (K, 4)`` in the
        resized image, ``scores (K,)``, ``labels (K,)`` (and for proposals
        ``level_ids (K,)``, which then group the NMS instead of labels).
        """
        if rescale:
            # mmdetection multiplies by the float32 reciprocal.
            w_scale, h_scale = img_meta['scale_factor']
            factor = results.bboxes.new_tensor(
                [1 / w_scale, 1 / h_scale, 1 / w_scale, 1 / h_scale])
            results.bboxes = results.bboxes * factor
        min_bbox_size = cfg.get('min_bbox_size', -1)
        if min_bbox_size >= 0 and len(results) > 0:
            widths = results.bboxes[:, 2] - results.bboxes[:, 0]
            heights = results.bboxes[:, 3] - results.bboxes[:, 1]
            keep = (widths > min_bbox_size) & (heights > min_bbox_size)
            if not bool(keep.all()):
                results = results[keep]
        groups = results.labels
        if 'level_ids' in results:
            groups = results.level_ids
            del results.level_ids
        if not with_nms or len(results) == 0:
            return results
        dets, keep = batched_nms(results.bboxes, results.scores, groups,
                                 cfg.get('nms'))
        results = results[keep]
        results.scores = dets[:, -1]
        max_per_img = cfg.get('max_per_img', -1)
        if max_per_img > 0:
            results = results[:max_per_img]
        return results

    def _scores_of(self, cls_logits: Tensor) -> Tensor:
        """Probabilities ``(B, N, num_classes)``: sigmoid, or softmax with
        the background column (the last) dropped."""
        if self.use_sigmoid_cls:
            return cls_logits.sigmoid()
        return cls_logits.softmax(-1)[..., :-1]
