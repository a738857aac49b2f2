"""Sample a fixed number of priors per image, a fraction of them positive
(RPN and the R-CNN stage; docs/sampling.md).

The sampler works on the batch's ``(B, N)`` assignment and returns
``(B, N)`` positive / negative masks. Its random draws are mmdetection's,
call for call: for each image in batch order, if there are more positive
candidates than wanted, ``torch.randperm(num_candidates)[:k]`` on the CPU
generator picks them (candidates in ascending index order); then the same
for negatives. A seeded run therefore selects exactly the priors
mmdetection selects. This per-image draw is the one Python loop over the
images of a training step: the random stream has to be consumed image by
image, in mmdetection's order.
"""
from typing import List, Tuple

import torch
from torch import Tensor

from ....registry import TASK_UTILS
from ..assigners.assign_result import AssignResult
from .sampling_result import SamplingResult, prepend_gts, single_image_batch


def _random_subset(mask: Tensor, num: int, num_candidates: int) -> Tensor:
    """Keep ``num`` of the ``num_candidates`` True entries of the 1-D
    ``mask``, chosen as mmdetection's ``random_choice`` chooses them. The
    count is known, so the candidates' indices are found without a host
    sync (``nonzero_static``; ascending, as ``nonzero`` gives them)."""
    candidates = torch.nonzero_static(mask, size=num_candidates)[:, 0]
    perm = torch.randperm(num_candidates)[:num].to(mask.device)
    subset = torch.zeros_like(mask)
    subset[candidates[perm]] = True
    return subset


def oversubscribed(pos_mask: Tensor, neg_mask: Tensor, num: int,
                   pos_fraction: float, neg_pos_ub: float
                   ) -> List[Tuple[int, bool, int, int]]:
    """Which candidates a batch must choose among: ``(img, negative,
    num_candidates, num_wanted)`` for every image whose positives (or
    negatives) outnumber the wanted count, image by image, positives
    first (mmdetection's order). ``pos_mask``, ``neg_mask``: ``(B, N)``
    bool candidates. The negatives wanted are ``num - min(#pos, wanted
    positives)``, capped by ``neg_pos_ub``. The draw depends on the counts
    (whether and over how many candidates ``randperm`` runs), so they come
    to the host: one transfer for both.
    """
    num_expected_pos = int(num * pos_fraction)
    pos_counts, neg_counts = torch.stack(
        [pos_mask.sum(1), neg_mask.sum(1)]).tolist()
    groups = []
    for img, (num_pos, num_neg) in enumerate(zip(pos_counts, neg_counts)):
        if num_pos > num_expected_pos:
            groups.append((img, False, num_pos, num_expected_pos))
            num_pos = num_expected_pos
        num_expected_neg = num - num_pos
        if neg_pos_ub >= 0:
            num_expected_neg = min(num_expected_neg,
                                   int(neg_pos_ub * max(1, num_pos)))
        if num_neg > num_expected_neg:
            groups.append((img, True, num_neg, num_expected_neg))
    return groups


@TASK_UTILS.register_module()
class RandomSampler:
    """Random positive / negative sampler.

    Args:
        num: priors sampled per image.
        pos_fraction: at most ``int(num * pos_fraction)`` positives.
        neg_pos_ub: negatives at most ``int(neg_pos_ub * max(1, #pos))``;
            -1 for no bound.
        add_gt_as_proposals: the ground truths become candidates, positives
            of themselves (R-CNN stage; see :func:`prepend_gts`).
        **kwargs: ignored (heads pass ``context=self``, which samplers that
            score candidates, such as OHEM, use).
    """

    avg_factor_with_neg = True

    def __init__(self,
                 num: int,
                 pos_fraction: float,
                 neg_pos_ub: float = -1,
                 add_gt_as_proposals: bool = True,
                 **kwargs):
        if num < 0 or not 0 <= pos_fraction <= 1:
            raise ValueError('RandomSampler: num must be >= 0 and '
                             f'pos_fraction in [0, 1], got num={num}, '
                             f'pos_fraction={pos_fraction}')
        self.num = num
        self.pos_fraction = pos_fraction
        self.neg_pos_ub = neg_pos_ub
        self.add_gt_as_proposals = add_gt_as_proposals

    # --------------------------------------------------------------- batch
    def sample_batch(self, assign_result: AssignResult, **kwargs
                     ) -> Tuple[Tensor, Tensor]:
        """Bool ``(pos_mask, neg_mask)`` shaped like ``gt_inds``
        (``(B, N)`` for a batch). Candidates are ``gt_inds > 0`` and
        ``gt_inds == 0``; the ground truths must already be among them
        (:func:`prepend_gts`). ``kwargs`` (``priors``, ``feats``, ... of
        the RoI stage) are not needed here."""
        gt_inds = assign_result.gt_inds
        batched = gt_inds.dim() == 2
        if not batched:
            gt_inds = gt_inds[None]
        pos_mask, neg_mask = gt_inds > 0, gt_inds == 0
        # randperm runs only for images with more candidates than wanted,
        # in mmdetection's order.
        for img, negative, num_candidates, num_wanted in oversubscribed(
                pos_mask, neg_mask, self.num, self.pos_fraction,
                self.neg_pos_ub):
            mask = neg_mask if negative else pos_mask
            mask[img] = _random_subset(mask[img], num_wanted, num_candidates)
        if not batched:
            return pos_mask[0], neg_mask[0]
        return pos_mask, neg_mask

    @staticmethod
    def avg_factor(pos_mask: Tensor, neg_mask: Tensor) -> Tensor:
        """``sum over images of max(#pos, 1) + max(#neg, 1)``, a 0-d
        tensor on the masks' device (no host sync; dividing by it rounds
        as dividing by the same number as a Python float)."""
        pos = pos_mask.reshape(-1, pos_mask.size(-1)).sum(-1).clamp(min=1)
        neg = neg_mask.reshape(-1, neg_mask.size(-1)).sum(-1).clamp(min=1)
        return (pos + neg).sum().float()

    # ----------------------------------------------------------- one image
    def sample(self, assign_result: AssignResult, pred_instances,
               gt_instances, **kwargs) -> SamplingResult:
        """mmdetection's single-image interface: the batched sampler on a
        batch of one.

        Args:
            assign_result: single-image result over the priors; it is not
                modified (mmdetection extends it in place).
            pred_instances: ``.priors (N, 4)``.
            gt_instances: ``.bboxes (G, 4)``, ``.labels (G,)``.
            **kwargs: passed on to ``sample_batch`` with the candidates
                (OHEM needs ``feats``: per level ``(1, C, H, W)``).

        Returns:
            :class:`SamplingResult`; with ``add_gt_as_proposals`` its
            indices refer to ``[ground truths ; priors]``.
        """
        if assign_result.is_batched:
            raise ValueError(f'{type(self).__name__}.sample takes a '
                             'single-image AssignResult; use sample_batch '
                             'for a batch')
        priors = pred_instances.priors
        if priors.dim() < 2:
            priors = priors[None, :]
        gt_bboxes = gt_instances.bboxes
        assign, candidates, valid, gt_valid = single_image_batch(
            assign_result, priors, gt_bboxes)
        gt_flags = torch.zeros_like(valid)
        if self.add_gt_as_proposals and len(gt_bboxes) > 0:
            assign, candidates, _, gt_flags = prepend_gts(
                assign, candidates[..., :4], valid, gt_bboxes[None],
                gt_instances.labels[None], gt_valid)
        pos_mask, neg_mask = self.sample_batch(
            assign, priors=candidates, gt_flags=gt_flags, **kwargs)
        return SamplingResult(
            pos_inds=pos_mask[0].nonzero(as_tuple=True)[0],
            neg_inds=neg_mask[0].nonzero(as_tuple=True)[0],
            priors=candidates[0],
            gt_bboxes=gt_bboxes,
            assign_result=assign.for_image(0),
            gt_flags=gt_flags[0].to(torch.uint8),
            avg_factor_with_neg=True)

    def __repr__(self) -> str:
        return (f'RandomSampler(num={self.num}, '
                f'pos_fraction={self.pos_fraction}, '
                f'neg_pos_ub={self.neg_pos_ub}, '
                f'add_gt_as_proposals={self.add_gt_as_proposals})')
