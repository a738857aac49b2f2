"""Assign each prior to the ground truth it overlaps most
(docs/assignment.md).

The whole batch is one tensor program on ``(B, G, N)`` overlaps: ground
truths are padded to the batch's largest count ``G`` with a validity mask,
and padded rows / invalid prior columns are set to ``-inf`` so they can
never be a maximum. Decisions equal mmdetection's per-image loop:

1. ``gt_inds = -1`` (ignore) everywhere.
2. With ``ignore_iof_thr > 0``: priors whose IoF with an ignore box exceeds
   it get overlap -1 with every ground truth.
3. Negatives: ``0 <= max_iou < neg_iou_thr`` (or ``lo <= max_iou < hi``).
4. Positives: ``max_iou >= pos_iou_thr`` take their best ground truth
   (first maximal index on ties).
5. Low-quality matching: each ground truth whose best IoU is
   ``>= min_pos_iou`` takes the priors reaching that IoU (all of them, or
   only the first with ``gt_max_assign_all=False``); on a prior claimed by
   several ground truths the later one wins, as in mmdetection's loop.
"""
from typing import Optional

import torch
from torch import Tensor

from ....registry import TASK_UTILS
from .assign_result import AssignResult


@TASK_UTILS.register_module()
class MaxIoUAssigner:
    """Max-IoU assigner with mmdetection's parameters.

    Args:
        pos_iou_thr: IoU at or above which a prior is positive.
        neg_iou_thr: float, or ``(lo, hi)``: IoU range of negatives
            (lower bound inclusive, upper exclusive).
        min_pos_iou: a ground truth's best IoU must reach this for
            low-quality matching.
        gt_max_assign_all: low-quality matching gives a ground truth all
            priors tied at its best IoU, not only the first.
        ignore_iof_thr: IoF with ignore boxes above which a prior is
            ignored; <= 0 disables.
        ignore_wrt_candidates: IoF over the prior's area (True) or over the
            ignore box's area (False).
        match_low_quality: enable step 5 (off for the R-CNN stage).
        gpu_assign_thr: with more ground truths than this (> 0), assign on
            the CPU to save GPU memory.
        iou_calculator: TASK_UTILS config of the overlap function.
    """

    # Elements of one (B, G, n) block of the IoU computation: 1 MB float32
    # temporaries, which stay in a core's L2 cache. Measured at B=2, G=50,
    # N=201,600 on 2 cores: 0.18 s with 2^16..2^18, 0.20 s with 2^22,
    # 0.51 s in one piece.
    overlap_chunk_elems = 1 << 18

    def __init__(self,
                 pos_iou_thr: float,
                 neg_iou_thr,
                 min_pos_iou: float = .0,
                 gt_max_assign_all: bool = True,
                 ignore_iof_thr: float = -1,
                 ignore_wrt_candidates: bool = True,
                 match_low_quality: bool = True,
                 gpu_assign_thr: int = -1,
                 iou_calculator: dict = dict(type='BboxOverlaps2D')):
        if isinstance(neg_iou_thr, (list, tuple)):
            if len(neg_iou_thr) != 2:
                raise ValueError('MaxIoUAssigner: neg_iou_thr must be a float '
                                 f'or a (lo, hi) pair, got {neg_iou_thr!r}')
            neg_iou_thr = tuple(neg_iou_thr)
        self.pos_iou_thr = pos_iou_thr
        self.neg_iou_thr = neg_iou_thr
        self.min_pos_iou = min_pos_iou
        self.gt_max_assign_all = gt_max_assign_all
        self.ignore_iof_thr = ignore_iof_thr
        self.ignore_wrt_candidates = ignore_wrt_candidates
        self.match_low_quality = match_low_quality
        self.gpu_assign_thr = gpu_assign_thr
        self.iou_calculator = TASK_UTILS.build(iou_calculator)

    # ----------------------------------------------------------- one image
    def assign(self, pred_instances, gt_instances, gt_instances_ignore=None,
               **kwargs) -> AssignResult:
        """mmdetection's single-image interface.

        Args:
            pred_instances: ``.priors (N, 4)``.
            gt_instances: ``.bboxes (G, 4)``, ``.labels (G,)``.
            gt_instances_ignore: optional ``.bboxes (Gi, 4)``.

        Returns:
            A single-image :class:`AssignResult` (``gt_inds (N,)``, ...).
        """
        priors = pred_instances.priors
        gt_bboxes = gt_instances.bboxes
        ignore = None
        if gt_instances_ignore is not None:
            ignore = gt_instances_ignore.bboxes[None]
        result = self.assign_batch(priors, gt_bboxes[None],
                                   gt_instances.labels[None],
                                   gt_bboxes_ignore=ignore)
        return result.for_image(0)

    # --------------------------------------------------------------- batch
    def assign_batch(self,
                     priors: Tensor,
                     gt_bboxes: Tensor,
                     gt_labels: Tensor,
                     gt_valid: Optional[Tensor] = None,
                     priors_valid: Optional[Tensor] = None,
                     gt_bboxes_ignore: Optional[Tensor] = None,
                     ignore_valid: Optional[Tensor] = None) -> AssignResult:
        """Assign a whole batch.

        Args:
            priors: ``(N, 4)`` shared by all images, or ``(B, N, 4)``.
            gt_bboxes: ``(B, G, 4)``, zero-padded to the largest count.
            gt_labels: ``(B, G)`` long.
            gt_valid: ``(B, G)`` bool, False on padding (None: all valid).
            priors_valid: ``(B, N)`` bool; an invalid prior takes no part
                at all and comes out with ``gt_inds = labels = -1`` and
                ``max_overlaps = -1`` (None: all valid).
            gt_bboxes_ignore: ``(B, Gi, 4)`` boxes to ignore, or None.
            ignore_valid: ``(B, Gi)`` bool, False on padding.

        Returns:
            Batched :class:`AssignResult`: ``gt_inds``, ``max_overlaps``,
            ``labels`` of shape ``(B, N)``, ``num_gts (B,)`` long.
        """
        if gt_bboxes.dim() != 3 or gt_bboxes.size(-1) != 4:
            raise ValueError('MaxIoUAssigner.assign_batch: gt_bboxes must be '
                             f'(B, G, 4), got {tuple(gt_bboxes.shape)}')
        num_imgs, num_gts_pad = gt_bboxes.shape[:2]
        if gt_labels.shape != (num_imgs, num_gts_pad):
            raise ValueError(
                f'MaxIoUAssigner.assign_batch: gt_labels must be (B, G) = '
                f'{(num_imgs, num_gts_pad)}, got {tuple(gt_labels.shape)}')
        device = priors.device
        if (self.gpu_assign_thr > 0 and num_gts_pad > self.gpu_assign_thr
                and device.type != 'cpu'):
            result = self.assign_batch(
                *[None if t is None else t.cpu() for t in (
                    priors, gt_bboxes, gt_labels, gt_valid, priors_valid,
                    gt_bboxes_ignore, ignore_valid)])
            return AssignResult(
                result.num_gts.to(device), result.gt_inds.to(device),
                result.max_overlaps.to(device), result.labels.to(device))

        num_priors = priors.size(-2)
        if gt_valid is None:
            gt_valid = gt_bboxes.new_ones((num_imgs, num_gts_pad),
                                          dtype=torch.bool)
        gt_valid = gt_valid.bool()
        if priors_valid is not None:
            priors_valid = priors_valid.bool()
        if ignore_valid is not None:
            ignore_valid = ignore_valid.bool()
        num_gts = gt_valid.sum(1)

        if num_gts_pad == 0 or num_priors == 0:
            # No ground truth anywhere (every valid prior is negative), or
            # nothing to assign.
            gt_inds = gt_bboxes.new_zeros((num_imgs, num_priors),
                                          dtype=torch.long)
            max_overlaps = gt_bboxes.new_zeros((num_imgs, num_priors))
            return self._finish(num_gts, gt_inds, max_overlaps, gt_labels,
                                priors_valid)

        overlaps = self._overlaps(gt_bboxes, priors)  # (B, G, N)
        if (self.ignore_iof_thr > 0 and gt_bboxes_ignore is not None
                and gt_bboxes_ignore.numel() > 0):
            ignored = self._ignored(priors, gt_bboxes_ignore, ignore_valid)
            overlaps.masked_fill_(ignored[:, None, :], -1)
        overlaps.masked_fill_(~gt_valid[:, :, None], float('-inf'))
        if priors_valid is not None:
            overlaps.masked_fill_(~priors_valid[:, None, :], float('-inf'))

        max_overlaps, argmax = overlaps.max(dim=1)  # (B, N)
        gt_inds = torch.full_like(argmax, -1)
        if isinstance(self.neg_iou_thr, tuple):
            lo, hi = self.neg_iou_thr
            neg = (max_overlaps >= lo) & (max_overlaps < hi)
        else:
            neg = (max_overlaps >= 0) & (max_overlaps < self.neg_iou_thr)
        gt_inds[neg] = 0
        pos = max_overlaps >= self.pos_iou_thr
        gt_inds = torch.where(pos, argmax + 1, gt_inds)

        if self.match_low_quality:
            winner = self._low_quality_winner(overlaps, gt_valid)
            gt_inds = torch.where(winner > 0, winner, gt_inds)

        # Images without any valid ground truth: all negative, IoU 0.
        no_gt = (num_gts == 0)[:, None]
        gt_inds = gt_inds.masked_fill(no_gt, 0)
        max_overlaps = max_overlaps.masked_fill(no_gt, 0)
        return self._finish(num_gts, gt_inds, max_overlaps, gt_labels,
                            priors_valid)

    # ------------------------------------------------------------- helpers
    def _overlaps(self, gt_bboxes: Tensor, priors: Tensor) -> Tensor:
        """``(B, G, N)`` IoU, computed a block of priors at a time into one
        buffer: a block's temporaries (``overlap_chunk_elems`` elements
        each) stay in the CPU cache instead of streaming ``(B, G, N)``
        tensors through memory once per arithmetic step."""
        num_imgs, num_gts = gt_bboxes.shape[:2]
        num_priors = priors.size(-2)
        chunk = max(1, self.overlap_chunk_elems // max(num_imgs * num_gts, 1))
        if chunk >= num_priors:
            return self.iou_calculator(gt_bboxes, priors)
        overlaps = None
        for start in range(0, num_priors, chunk):
            block = self.iou_calculator(gt_bboxes,
                                        priors[..., start:start + chunk, :])
            if overlaps is None:
                overlaps = block.new_empty((num_imgs, num_gts, num_priors))
            overlaps[..., start:start + chunk] = block
        return overlaps

    def _ignored(self, priors: Tensor, ignore: Tensor,
                 ignore_valid: Optional[Tensor]) -> Tensor:
        """Bool ``(B, N)``: the prior's max IoF with a valid ignore box is
        above ``ignore_iof_thr``."""
        if self.ignore_wrt_candidates:
            iof = self.iou_calculator(priors, ignore, mode='iof')  # (B,N,Gi)
            if ignore_valid is not None:
                iof = iof.masked_fill(~ignore_valid[:, None, :], -1)
            best = iof.max(dim=2).values
        else:
            iof = self.iou_calculator(ignore, priors, mode='iof')  # (B,Gi,N)
            if ignore_valid is not None:
                iof = iof.masked_fill(~ignore_valid[:, :, None], -1)
            best = iof.max(dim=1).values
        return best > self.ignore_iof_thr

    def _low_quality_winner(self, overlaps: Tensor,
                            gt_valid: Tensor) -> Tensor:
        """``(B, N)`` long: the 1-based ground truth that low-quality
        matching gives each prior, 0 for none.

        mmdetection loops over ground truths in increasing order and
        overwrites, so a prior claimed by several ends with the largest
        index: that is a max over the claimants' 1-based indices.
        """
        num_imgs, num_gts, num_priors = overlaps.shape
        gt_max, gt_argmax = overlaps.max(dim=2)  # (B, G), first max
        eligible = gt_valid & (gt_max >= self.min_pos_iou)
        if self.gt_max_assign_all:
            small = torch.int16 if num_gts < 2**15 else torch.int32
            order = torch.arange(
                1, num_gts + 1, dtype=small, device=overlaps.device)
            claims = (overlaps == gt_max[:, :, None]) & eligible[:, :, None]
            return (claims * order[None, :, None]).amax(dim=1).long()
        order = torch.arange(1, num_gts + 1, device=overlaps.device)
        src = torch.where(eligible, order[None, :], 0)
        winner = overlaps.new_zeros((num_imgs, num_priors), dtype=torch.long)
        return winner.scatter_reduce_(1, gt_argmax, src, reduce='amax')

    @staticmethod
    def _finish(num_gts: Tensor, gt_inds: Tensor, max_overlaps: Tensor,
                gt_labels: Tensor,
                priors_valid: Optional[Tensor]) -> AssignResult:
        """Exclude invalid priors and look up the labels."""
        if priors_valid is not None:
            gt_inds = gt_inds.masked_fill(~priors_valid, -1)
            max_overlaps = max_overlaps.masked_fill(~priors_valid, -1)
        pos = gt_inds > 0
        if gt_labels.size(1) > 0:
            labels = gt_labels.long().gather(1, (gt_inds - 1).clamp(min=0))
            labels = labels.masked_fill(~pos, -1)
        else:
            labels = torch.full_like(gt_inds, -1)
        return AssignResult(num_gts.long(), gt_inds, max_overlaps, labels)

    def __repr__(self) -> str:
        return (f'MaxIoUAssigner(pos_iou_thr={self.pos_iou_thr}, '
                f'neg_iou_thr={self.neg_iou_thr}, '
                f'min_pos_iou={self.min_pos_iou}, '
                f'gt_max_assign_all={self.gt_max_assign_all}, '
                f'match_low_quality={self.match_low_quality}, '
                f'ignore_iof_thr={self.ignore_iof_thr})')
