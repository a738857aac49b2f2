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
    """The sampler of heads that use all priors (RetinaNet, SSD).

    ``**kwargs`` (``context=`` from the head) are ignored.
    """

    avg_factor_with_neg = False
    add_gt_as_proposals = False

    def __init__(self, **kwargs):
        pass

    def sample_batch(self, assign_result: AssignResult, **kwargs
                     ) -> Tuple[Tensor, Tensor]:
        """Bool ``(pos_mask, neg_mask)`` shaped like ``gt_inds``
        (``(B, N)`` for a batch)."""
        gt_inds = assign_result.gt_inds
        return gt_inds > 0, gt_inds == 0

    @staticmethod
    def avg_factor(pos_mask: Tensor, neg_mask: Tensor) -> Tensor:
        """``sum over images of max(#pos, 1)`` (docs/anchor_head.md), a 0-d
        float tensor on the masks' device (no host sync)."""
        pos = pos_mask.reshape(-1, pos_mask.size(-1)).sum(-1)
        return pos.clamp(min=1).sum().float()

    def sample(self, assign_result: AssignResult, pred_instances,
               gt_instances, *args, **kwargs) -> SamplingResult:
        """Single image: ``pred_instances.priors (N, 4)``,
        ``gt_instances.bboxes (G, 4)``."""
        if assign_result.is_batched:
            raise ValueError('PseudoSampler.sample takes a single-image '
                             'AssignResult; use sample_batch for a batch')
        priors = pred_instances.priors
        pos_mask, neg_mask = self.sample_batch(assign_result)
        return SamplingResult(
            pos_inds=pos_mask.nonzero(as_tuple=True)[0],
            neg_inds=neg_mask.nonzero(as_tuple=True)[0],
            priors=priors,
            gt_bboxes=gt_instances.bboxes,
            assign_result=assign_result,
            gt_flags=priors.new_zeros(priors.shape[0], dtype=torch.uint8),
            avg_factor_with_neg=False)

    def __repr__(self) -> str:
        return 'PseudoSampler()'
