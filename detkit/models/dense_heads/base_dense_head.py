"""The dense-head interface and the prediction steps all dense heads share.

A dense head predicts, for every feature-map location, class scores and box
regressions. ``forward`` maps FPN features to per-level outputs; ``loss``
turns them into a dict of named losses; ``predict`` into per-image
detections (``InstanceData`` with ``bboxes (K, 4)`` xyxy, ``scores (K,)``,
``labels (K,)``).
"""
from typing import List, Optional, Tuple

import torch
from mmengine.config import ConfigDict
from mmengine.model import BaseModule
from mmengine.structures import InstanceData
from torch import Tensor

from ..layers import batched_nms
from ..utils import unpack_gt_instances


def topk_per_image(scores: Tensor, score_thr: float,
                   topk: int) -> Tuple[Tensor, Tensor, Tensor, Tensor]:
    """Keep the top ``topk`` (prior, class) pairs of each image whose score
    is above ``score_thr`` — the whole batch in one ``topk`` call.

    Args:
        scores: ``(B, N, C)`` per prior and class.
        score_thr: pairs must score strictly above it.
        topk: pairs kept per image at most (``<= 0``: all).

    Returns:
        tuple: ``scores (B, K)`` descending, ``prior_idx (B, K)``,
        ``labels (B, K)``, ``valid (B, K)`` bool (False for padding when an
        image has fewer than K pairs above the threshold).
    """
    batch, num_priors, num_classes = scores.shape
    flat = scores.reshape(batch, -1)
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
    post-processing (rescale, small-box filter, NMS, top ``max_per_img``)."""

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

    def bbox_post_process(self,
                          results: InstanceData,
                          cfg: ConfigDict,
                          rescale: bool = False,
                          with_nms: bool = True,
                          img_meta: Optional[dict] = None) -> InstanceData:
        """Rescale, drop small boxes, NMS and keep ``cfg.max_per_img``.

        ``results`` holds one image's candidates: ``bboxes (K, 4)`` in the
        resized image, ``scores (K,)``, ``labels (K,)`` (and for RPN
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
        if not with_nms:
            return results
        if len(results) == 0:
            return results
        groups = results.level_ids if 'level_ids' in results else \
            results.labels
        dets, keep = batched_nms(results.bboxes, results.scores, groups,
                                 cfg.get('nms'))
        results = results[keep]
        results.scores = dets[:, -1]
        max_per_img = cfg.get('max_per_img', -1)
        if max_per_img > 0:
            results = results[:max_per_img]
        if 'level_ids' in results:
            del results.level_ids
        return results
