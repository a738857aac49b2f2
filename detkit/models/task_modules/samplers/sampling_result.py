"""Sampled priors: the whole batch (:class:`BatchSamplingResult`, what the
RoI stage trains on) and one image (:class:`SamplingResult`,
mmdetection's interface, a view of the batch).

With ``add_gt_as_proposals`` the candidates of an image are its ground
truths followed by its proposals. Batched, each image's candidates are
``[ground truths padded to G ; proposals padded to N]`` (:func:`prepend_gts`):
padding rows are ignored priors, so an image's candidates in index order
are exactly mmdetection's ``[ground truths ; proposals]``, and the random
draws over them are the same.

The sampled RoIs of the batch are, image after image, the image's
positives then its negatives, each in ascending candidate index
(:meth:`BatchSamplingResult.roi_index`). See docs/sampling.md.
"""
from typing import Tuple

import torch
from torch import Tensor

from ..assigners.assign_result import AssignResult


def prepend_gts(assign_result: AssignResult, priors: Tensor,
                priors_valid: Tensor, gt_bboxes: Tensor, gt_labels: Tensor,
                gt_valid: Tensor
                ) -> Tuple[AssignResult, Tensor, Tensor, Tensor]:
    """Make the ground truths candidates of themselves, for the batch.

    Args:
        assign_result: batched, over ``priors``; it is not modified.
        priors: ``(B, N, 4)``; priors_valid: ``(B, N)`` bool.
        gt_bboxes: ``(B, G, 4)``; gt_labels, gt_valid: ``(B, G)``.

    Returns:
        tuple: the assignment over ``[gts ; priors]``, the candidates
        ``(B, G + N, 4)``, their validity and ``gt_flags (B, G + N)`` bool
        (True on a valid ground-truth row).
    """
    extended = AssignResult(assign_result.num_gts, assign_result.gt_inds,
                            assign_result.max_overlaps, assign_result.labels)
    extended.add_gt_(gt_labels, gt_valid)
    candidates = torch.cat([gt_bboxes.to(priors), priors], 1)
    valid = torch.cat([gt_valid, priors_valid], 1)
    gt_flags = torch.cat([gt_valid, torch.zeros_like(priors_valid)], 1)
    return extended, candidates, valid, gt_flags


class BatchSamplingResult:
    """The sampled candidates of a batch, in the padded layout.

    Args:
        priors: ``(B, M, 4)`` candidates (``[gts ; proposals]`` padded, or
            the proposals alone).
        priors_valid: ``(B, M)`` bool, False on padding.
        gt_flags: ``(B, M)`` bool, True on a prepended ground truth.
        assign_result: batched :class:`AssignResult` over the candidates.
        pos_mask, neg_mask: ``(B, M)`` bool, the sampled candidates.
        gt_bboxes: ``(B, G, 4)`` padded ground truths (``gt_inds - 1``
            indexes them).
        avg_factor_with_neg: the sampler normalises by positives and
            negatives (RandomSampler, OHEMSampler) or by positives only.
    """

    def __init__(self, priors: Tensor, priors_valid: Tensor,
                 gt_flags: Tensor, assign_result: AssignResult,
                 pos_mask: Tensor, neg_mask: Tensor, gt_bboxes: Tensor,
                 avg_factor_with_neg: bool = True):
        self.priors = priors
        self.priors_valid = priors_valid
        self.gt_flags = gt_flags
        self.assign_result = assign_result
        self.pos_mask = pos_mask
        self.neg_mask = neg_mask
        self.gt_bboxes = gt_bboxes
        self.avg_factor_with_neg = avg_factor_with_neg
        self._roi_index = None

    def roi_index(self) -> Tuple[Tensor, Tensor]:
        """``(img (R,), candidate (R,))`` of the sampled RoIs in RoI order:
        per image its positives then its negatives, each ascending by
        candidate index, images in batch order — one stable sort of the
        row-major sampled entries by ``2 * img + is_negative``."""
        if self._roi_index is None:
            img, cand = (self.pos_mask | self.neg_mask).nonzero(
                as_tuple=True)
            key = img * 2 + self.neg_mask[img, cand]
            order = key.argsort(stable=True)
            self._roi_index = (img[order], cand[order])
        return self._roi_index

    def rois(self) -> Tensor:
        """``(R, 5)`` ``[img, x1, y1, x2, y2]`` of the sampled RoIs."""
        img, cand = self.roi_index()
        boxes = self.priors[img, cand]
        return torch.cat([img[:, None].to(boxes.dtype), boxes], 1)

    def __len__(self) -> int:
        return self.pos_mask.size(0)

    def __getitem__(self, img: int) -> 'SamplingResult':
        """Image ``img`` as mmdetection's :class:`SamplingResult`, its
        indices referring to ``[its ground truths ; its proposals]``
        without padding."""
        if not 0 <= img < len(self):
            raise IndexError(f'BatchSamplingResult: image {img} of a batch '
                             f'of {len(self)}')
        # Padding (of ground truths or proposals) is never valid, and can
        # be neither positive nor negative.
        keep = self.priors_valid[img].nonzero(as_tuple=True)[0]
        num_gts = int(self.assign_result.num_gts[img])
        assign = AssignResult(
            num_gts, self.assign_result.gt_inds[img][keep],
            self.assign_result.max_overlaps[img][keep],
            self.assign_result.labels[img][keep])
        return SamplingResult(
            pos_inds=self.pos_mask[img][keep].nonzero(as_tuple=True)[0],
            neg_inds=self.neg_mask[img][keep].nonzero(as_tuple=True)[0],
            priors=self.priors[img][keep],
            gt_bboxes=self.gt_bboxes[img][:num_gts],
            assign_result=assign,
            gt_flags=self.gt_flags[img][keep].to(torch.uint8),
            avg_factor_with_neg=self.avg_factor_with_neg)

    def __repr__(self) -> str:
        return (f'BatchSamplingResult(images={len(self)}, '
                f'pos={self.pos_mask.sum(1).tolist()}, '
                f'neg={self.neg_mask.sum(1).tolist()})')


class SamplingResult:
    """Sampled positive / negative priors of one image.

    Args:
        pos_inds: long ``(P,)`` ascending indices into ``priors``.
        neg_inds: long ``(Q,)`` ascending indices into ``priors``.
        priors: ``(N, 4)`` all candidate priors (incl. prepended GTs).
        gt_bboxes: ``(G, 4)`` ground truths of the image.
        assign_result: single-image :class:`AssignResult` over ``priors``.
        gt_flags: uint8 ``(N,)``, 1 where the prior is a prepended GT.
        avg_factor_with_neg: ``avg_factor`` counts negatives too
            (RandomSampler) or only positives (PseudoSampler).

    Attributes:
        num_pos, num_neg: ``max(count, 1)``.
        avg_factor: ``num_pos + num_neg`` or ``num_pos``.
        pos_priors, neg_priors: ``(P, 4)``, ``(Q, 4)``.
        pos_is_gt: uint8 ``(P,)``.
        pos_assigned_gt_inds: long ``(P,)`` 0-based ground-truth indices.
        pos_gt_bboxes: ``(P, 4)``, pos_gt_labels: ``(P,)``.
    """

    def __init__(self,
                 pos_inds: Tensor,
                 neg_inds: Tensor,
                 priors: Tensor,
                 gt_bboxes: Tensor,
                 assign_result: AssignResult,
                 gt_flags: Tensor,
                 avg_factor_with_neg: bool = True):
        self.pos_inds = pos_inds
        self.neg_inds = neg_inds
        self.num_pos = max(pos_inds.numel(), 1)
        self.num_neg = max(neg_inds.numel(), 1)
        self.avg_factor_with_neg = avg_factor_with_neg
        self.avg_factor = (self.num_pos + self.num_neg
                           if avg_factor_with_neg else self.num_pos)
        self.pos_priors = priors[pos_inds]
        self.neg_priors = priors[neg_inds]
        self.gt_flags = gt_flags
        self.pos_is_gt = gt_flags[pos_inds]
        self.num_gts = gt_bboxes.shape[0]
        self.pos_assigned_gt_inds = assign_result.gt_inds[pos_inds] - 1
        self.pos_gt_labels = assign_result.labels[pos_inds]
        if gt_bboxes.numel() == 0:
            if self.pos_assigned_gt_inds.numel() != 0:
                raise ValueError('SamplingResult: positives were sampled for '
                                 'an image without ground truth')
            self.pos_gt_bboxes = gt_bboxes.reshape(0, 4)
        else:
            self.pos_gt_bboxes = gt_bboxes.reshape(
                -1, 4)[self.pos_assigned_gt_inds]

    @property
    def priors(self) -> Tensor:
        """``(P + Q, 4)``: positive then negative priors."""
        return torch.cat([self.pos_priors, self.neg_priors])

    @property
    def info(self) -> dict:
        return dict(
            pos_inds=self.pos_inds,
            neg_inds=self.neg_inds,
            pos_priors=self.pos_priors,
            neg_priors=self.neg_priors,
            pos_is_gt=self.pos_is_gt,
            num_gts=self.num_gts,
            pos_assigned_gt_inds=self.pos_assigned_gt_inds,
            num_pos=self.num_pos,
            num_neg=self.num_neg,
            avg_factor=self.avg_factor)

    def __repr__(self) -> str:
        return (f'SamplingResult(pos={self.pos_inds.numel()}, '
                f'neg={self.neg_inds.numel()}, num_gts={self.num_gts}, '
                f'avg_factor={self.avg_factor})')


def single_image_batch(assign_result: AssignResult, priors: Tensor,
                       gt_bboxes: Tensor
                       ) -> Tuple[AssignResult, Tensor, Tensor, Tensor]:
    """A single-image result, priors ``(N, 4)`` and ground truths ``(G,
    4)`` as a batch of one: ``(assign, priors (1, N, 4), priors_valid,
    gt_valid)`` for the batched sampler code."""
    batched = AssignResult(
        torch.tensor([assign_result.num_gts], device=priors.device),
        assign_result.gt_inds[None], assign_result.max_overlaps[None],
        assign_result.labels[None])
    priors_valid = priors.new_ones((1, priors.size(0)), dtype=torch.bool)
    gt_valid = gt_bboxes.new_ones((1, gt_bboxes.size(0)), dtype=torch.bool)
    return batched, priors[None], priors_valid, gt_valid
