"""Take every assigned prior: positives ``gt_inds > 0``, negatives
``gt_inds == 0`` (ignored ``-1`` priors are neither)."""
from typing import Tuple

import torch
from torch import Tensor

from ....registry import TASK_UTILS
from ..assigners.assign_result import AssignResult
from .sampling_result import SamplingResult


@TASK_UTILS.register_module()
class PseudoSampler:
    """The sampler of heads that use all priors (RetinaNet, SSD)."""

    def sample(self, assign_result: AssignResult, pred_instances,
               gt_instances, *args, **kwargs) -> SamplingResult:
        """Single image: ``pred_instances.priors (N, 4)``,
        ``gt_instances.bboxes (G, 4)``."""
        if assign_result.is_batched:
            raise ValueError('PseudoSampler.sample takes a single-image '
                             'AssignResult; use sample_batch for a batch')
        priors = pred_instances.priors
        gt_inds = assign_result.gt_inds
        pos_inds = (gt_inds > 0).nonzero(as_tuple=True)[0]
        neg_inds = (gt_inds == 0).nonzero(as_tuple=True)[0]
        gt_flags = priors.new_zeros(priors.shape[0], dtype=torch.uint8)
        return SamplingResult(
            pos_inds=pos_inds,
            neg_inds=neg_inds,
            priors=priors,
            gt_bboxes=gt_instances.bboxes,
            assign_result=assign_result,
            gt_flags=gt_flags,
            avg_factor_with_neg=False)

    def sample_batch(self, assign_result: AssignResult
                     ) -> Tuple[Tensor, Tensor]:
        """Bool ``(pos_mask, neg_mask)`` shaped like ``gt_inds``
        (``(B, N)`` for a batch)."""
        gt_inds = assign_result.gt_inds
        return gt_inds > 0, gt_inds == 0

    @staticmethod
    def avg_factor(pos_mask: Tensor, neg_mask: Tensor) -> float:
        """``sum over images of max(#pos, 1)`` (MMDET_SEMANTICS §7)."""
        pos = pos_mask.reshape(-1, pos_mask.size(-1)).sum(-1)
        return float(pos.clamp(min=1).sum())

    def __repr__(self) -> str:
        return 'PseudoSampler()'
