"""One image's sampled priors (mmdetection's ``SamplingResult`` fields).

Sampled RoIs are the positive priors then the negative ones, each in
ascending prior index; with ``add_gt_as_proposals`` the prior list is
``[ground truths ; proposals]`` and ``gt_flags`` marks the first rows.
"""
import torch
from torch import Tensor

from ..assigners.assign_result import AssignResult


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
