"""Adaptive Training Sample Selection (Zhang et al., 2020), mmdetection's
``ATSSAssigner``.

For one image with ``N`` priors (boxes, in FPN level order) and ``G``
ground truths:

1. ``iou (N, G)``: IoU of every prior with every ground truth, and
   ``dist (N, G)``: Euclidean distance between the prior's centre and the
   ground truth's centre, ``sqrt(dx ** 2 + dy ** 2)``.
2. With ``ignore_iof_thr > 0`` and ignore boxes: a prior whose largest IoF
   (intersection over the prior's area) with an ignore box exceeds the
   threshold gets ``dist = 1e8`` with every ground truth and
   ``gt_inds = -1``.
3. Candidates: on each level, for each ground truth, the ``min(topk,
   N_level)`` priors of smallest distance (``torch.topk(largest=False)``
   along the level's prior axis), concatenated level after level: ``K =
   sum_l min(topk, N_l)`` candidates per ground truth (``topk * levels``
   when every level has enough priors).
4. Per ground truth, ``thr = mean + std`` of its candidates' IoUs (``std``
   unbiased, torch's default).
5. A candidate is positive for its ground truth when ``iou >= thr`` and its
   centre lies inside the box: ``min(cx - x1, cy - y1, x2 - cx, y2 - cy) >
   0.01``.
6. A prior positive for several ground truths goes to the one of highest
   IoU (the first on ties): ``max_overlaps, argmax`` over the ground truths
   of the IoU with non-positive pairs set to ``-1e8``; ``gt_inds = argmax +
   1`` where ``max_overlaps != -1e8`` (this also overrides step 2's -1),
   else it stays 0 (or -1). So ``max_overlaps`` is ``-1e8`` on every prior
   that is not positive, as mmdetection returns it.
7. No ground truth: every prior gets ``gt_inds = 0``, ``max_overlaps = 0``
   (no ignore step). No prior: empty results.

Batching (``assign_batch``). The batch shares one ``(N, 4)`` prior set;
ground truths are padded to ``(B, G, 4)`` with a validity mask. Steps 1, 2,
5, 6 and 7 are one tensor program over ``(B, G, N)``, and so is step 3 as
long as every image keeps all its priors: ``topk`` over ``(B, G, N_l)``
along the prior axis treats each (image, ground truth) slice on its own,
exactly as the single-image ``(N_l, G)`` call does (ties included). Two
steps cannot always be batched without changing mmdetection's numbers:

- Invalid priors (``priors_valid`` False: outside the image's own padded
  area in a batch of mixed sizes; the ATSS head removes them before
  assignment, even with ``allowed_border=-1``). Removal is not the same as
  an infinite distance: a level left with fewer than ``topk`` priors gives
  fewer candidates, which changes the mean and std, and ``topk``'s choice
  among tied distances depends on the exact sequence it is given. So on a
  level where some image lost priors, the images are grouped by their
  number of remaining priors and each group's compacted distances get one
  ``topk`` call.
- The mean in step 4: torch sums a ``(K, G)`` tensor over ``K`` in an order
  that depends on ``G`` (vectorised columns versus the remainder), so the
  mean of a ground truth's candidates depends on how many ground truths its
  image has. Images are grouped by (candidates, ground truths) and each
  group's compacted ``(n, K, G)`` IoUs are reduced in one call, which
  equals the per-image result bit for bit (verified on CPU). A batch whose
  images all have the same counts is a single group.

Both loops run over distinct counts (at most ``B``) and touch only the
small candidate tensors. See docs/assignment.md.
"""
import warnings
from typing import List, Optional, Sequence

import torch
from torch import Tensor

from ....registry import TASK_UTILS
from .assign_result import AssignResult

# mmdetection's "infinite" distance and "no IoU" marker.
INF = 100000000


@TASK_UTILS.register_module()
class ATSSAssigner:
    """ATSS assigner with mmdetection's parameters.

    Args:
        topk: candidates per level and ground truth, by centre distance.
        alpha: the cost-based variant of DDOD; not implemented, must be
            None.
        iou_calculator: TASK_UTILS config of the overlap function.
        ignore_iof_thr: IoF with an ignore box above which a prior is
            ignored; <= 0 disables.
    """

    def __init__(self,
                 topk: int,
                 alpha: Optional[float] = None,
                 iou_calculator: dict = dict(type='BboxOverlaps2D'),
                 ignore_iof_thr: float = -1):
        if alpha is not None:
            raise NotImplementedError(
                f'ATSSAssigner: alpha={alpha!r} selects the cost-based ATSS '
                'of DDOD (IoU of predicted boxes weighted by classification '
                'scores), which detkit does not implement; remove alpha '
                'from train_cfg.assigner for the IoU-based ATSS.')
        if isinstance(topk, bool) or not isinstance(topk, int) or topk < 1:
            raise ValueError(f'ATSSAssigner: topk must be a positive int, '
                             f'got {topk!r}')
        self.topk = topk
        self.alpha = alpha
        self.iou_calculator = TASK_UTILS.build(iou_calculator)
        self.ignore_iof_thr = ignore_iof_thr

    # ----------------------------------------------------------- one image
    def assign(self, pred_instances, num_level_priors: Sequence[int],
               gt_instances, gt_instances_ignore=None) -> AssignResult:
        """mmdetection's single-image interface.

        Args:
            pred_instances: ``.priors (N, 4)`` (extra columns are dropped),
                the priors of one image in level order.
            num_level_priors: priors per level, summing to ``N``.
            gt_instances: ``.bboxes (G, 4)``, ``.labels (G,)``.
            gt_instances_ignore: optional ``.bboxes (Gi, 4)``.

        Returns:
            A single-image :class:`AssignResult` (``gt_inds (N,)``, ...).
        """
        if 'scores' in pred_instances or 'bboxes' in pred_instances:
            warnings.warn('ATSSAssigner: pred_instances.scores/bboxes are '
                          'ignored; the IoU-based ATSS uses only the priors')
        ignore = None
        if gt_instances_ignore is not None:
            ignore = gt_instances_ignore.bboxes[None]
        result = self.assign_batch(
            pred_instances.priors, num_level_priors,
            gt_instances.bboxes[None], gt_instances.labels[None],
            gt_bboxes_ignore=ignore)
        return result.for_image(0)

    # --------------------------------------------------------------- batch
    def assign_batch(self,
                     priors: Tensor,
                     num_level_priors: Sequence[int],
                     gt_bboxes: Tensor,
                     gt_labels: Tensor,
                     gt_valid: Optional[Tensor] = None,
                     priors_valid: Optional[Tensor] = None,
                     gt_bboxes_ignore: Optional[Tensor] = None,
                     ignore_valid: Optional[Tensor] = None) -> AssignResult:
        """Assign a whole batch.

        Args:
            priors: ``(N, 4)`` boxes shared by all images, in level order.
            num_level_priors: priors per level, summing to ``N``.
            gt_bboxes: ``(B, G, 4)``, padded to the largest count.
            gt_labels: ``(B, G)`` long.
            gt_valid: ``(B, G)`` bool, False on padding (None: all valid).
            priors_valid: ``(B, N)`` bool (None: all valid). An invalid
                prior is treated as removed from its image, as the ATSS
                head removes it before assignment, and comes out with
                ``gt_inds = labels = -1`` and ``max_overlaps = -1``.
            gt_bboxes_ignore: ``(B, Gi, 4)`` boxes to ignore, or None.
            ignore_valid: ``(B, Gi)`` bool, False on padding.

        Returns:
            Batched :class:`AssignResult`: ``gt_inds``, ``max_overlaps``,
            ``labels`` of shape ``(B, N)`` (``gt_inds`` index the padded
            ground truths, 1-based), ``num_gts (B,)`` long.
        """
        priors, num_level_priors = self._check(priors, num_level_priors,
                                               gt_bboxes, gt_labels)
        num_imgs, num_gts_pad = gt_bboxes.shape[:2]
        num_priors = priors.size(0)
        if gt_valid is None:
            gt_valid = gt_bboxes.new_ones((num_imgs, num_gts_pad),
                                          dtype=torch.bool)
        gt_valid = gt_valid.bool()
        num_gts = gt_valid.sum(1)
        if priors_valid is not None:
            priors_valid = priors_valid.bool()
            if priors_valid.shape != (num_imgs, num_priors):
                raise ValueError(
                    f'ATSSAssigner.assign_batch: priors_valid must be (B, N)'
                    f' = {(num_imgs, num_priors)}, got '
                    f'{tuple(priors_valid.shape)}')
        if num_gts_pad == 0 or num_priors == 0:
            gt_inds = gt_bboxes.new_zeros((num_imgs, num_priors),
                                          dtype=torch.long)
            max_overlaps = gt_bboxes.new_zeros((num_imgs, num_priors))
            return _finish(num_gts, gt_inds, max_overlaps, gt_labels,
                           priors_valid)

        # (B, G, N): one image's (G, N) block per row of ground truths, so
        # the prior axis that topk and the reductions walk is contiguous.
        # IoU is symmetric element by element, so these are mmdetection's
        # (N, G) values transposed. Float32 even from an fp16 calculator:
        # -1e8 below must not overflow to -inf.
        overlaps = self.iou_calculator(gt_bboxes, priors).float()
        prior_cx = (priors[:, 0] + priors[:, 2]) / 2.0
        prior_cy = (priors[:, 1] + priors[:, 3]) / 2.0
        gt_cx = (gt_bboxes[..., 0] + gt_bboxes[..., 2]) / 2.0
        gt_cy = (gt_bboxes[..., 1] + gt_bboxes[..., 3]) / 2.0
        distances = (prior_cx[None, None, :] - gt_cx[:, :, None]).pow_(2).add_(
            (prior_cy[None, None, :] - gt_cy[:, :, None]).pow_(2)).sqrt_()

        ignored = None
        if (self.ignore_iof_thr > 0 and gt_bboxes_ignore is not None
                and gt_bboxes_ignore.numel() > 0):
            # IoF over the prior's area: (B, N, Gi).
            iof = self.iou_calculator(priors, gt_bboxes_ignore, mode='iof')
            if ignore_valid is not None:
                iof = iof.masked_fill(~ignore_valid.bool()[:, None, :], -1)
            ignored = iof.max(dim=2).values > self.ignore_iof_thr  # (B, N)
            distances.masked_fill_(ignored[:, None, :], INF)

        # (B, G, K) prior indices of the candidates and (B, K) which of the
        # K slots an image really has (all, unless it lost priors).
        cand_idxs, cand_valid = self._candidates(distances, num_level_priors,
                                                 priors_valid)
        del distances
        cand_ious = overlaps.gather(2, cand_idxs)
        thr = self._thresholds(cand_ious, cand_valid, gt_valid)  # (B, G)

        cx = prior_cx[cand_idxs]
        cy = prior_cy[cand_idxs]
        x1, y1, x2, y2 = (gt_bboxes[..., i, None] for i in range(4))
        inside = torch.minimum(
            torch.minimum(cx - x1, cy - y1),
            torch.minimum(x2 - cx, y2 - cy)) > 0.01
        is_pos = ((cand_ious >= thr[:, :, None]) & inside
                  & cand_valid[:, None, :] & gt_valid[:, :, None])

        # The IoU on positive (gt, prior) pairs, -INF elsewhere; a slot
        # that is not positive contributes -INF, so amax is exact even
        # where the padding slots repeat an index.
        src = cand_ious.masked_fill(~is_pos, -INF)
        overlaps_inf = overlaps.fill_(-INF).scatter_reduce_(
            2, cand_idxs, src, reduce='amax')
        max_overlaps, argmax = overlaps_inf.max(dim=1)  # (B, N)
        gt_inds = torch.zeros_like(argmax)
        if ignored is not None:
            gt_inds.masked_fill_(ignored, -1)
        gt_inds = torch.where(max_overlaps != -INF, argmax + 1, gt_inds)

        no_gt = (num_gts == 0)[:, None]
        gt_inds = gt_inds.masked_fill(no_gt, 0)
        max_overlaps = max_overlaps.masked_fill(no_gt, 0)
        return _finish(num_gts, gt_inds, max_overlaps, gt_labels,
                       priors_valid)

    # ------------------------------------------------------------- helpers
    @staticmethod
    def _check(priors, num_level_priors, gt_bboxes, gt_labels):
        if priors.dim() != 2 or priors.size(-1) < 4:
            raise ValueError('ATSSAssigner.assign_batch: priors must be one '
                             '(N, 4) set shared by the batch, got '
                             f'{tuple(priors.shape)}')
        if gt_bboxes.dim() != 3 or gt_bboxes.size(-1) != 4:
            raise ValueError('ATSSAssigner.assign_batch: gt_bboxes must be '
                             f'(B, G, 4), got {tuple(gt_bboxes.shape)}')
        if gt_labels.shape != gt_bboxes.shape[:2]:
            raise ValueError(
                'ATSSAssigner.assign_batch: gt_labels must be (B, G) = '
                f'{tuple(gt_bboxes.shape[:2])}, got {tuple(gt_labels.shape)}')
        num_level_priors = [int(n) for n in num_level_priors]
        if sum(num_level_priors) != priors.size(0):
            raise ValueError(
                f'ATSSAssigner: num_level_priors {num_level_priors} sum to '
                f'{sum(num_level_priors)}, but there are {priors.size(0)} '
                'priors; give the per-level counts of the priors passed')
        return priors[:, :4], num_level_priors

    def _candidates(self, distances: Tensor, num_level_priors: List[int],
                    priors_valid: Optional[Tensor]):
        """Step 3 on ``distances (B, G, N)``: ``(B, G, K)`` candidate prior
        indices and ``(B, K)`` bool slots, ``K = sum_l min(topk, N_l)``,
        level after level."""
        num_imgs, num_gts, _ = distances.shape
        idxs, valid = [], []
        start = 0
        for num in num_level_priors:
            end = start + num
            k = min(self.topk, num)
            level = distances[..., start:end]
            level_valid = (None if priors_valid is None else
                           priors_valid[:, start:end])
            if k == 0:
                pass
            elif level_valid is None or bool(level_valid.all()):
                idxs.append(level.topk(k, dim=2, largest=False)[1] + start)
                valid.append(
                    distances.new_ones((num_imgs, k), dtype=torch.bool))
            else:
                lvl_idxs = distances.new_zeros((num_imgs, num_gts, k),
                                               dtype=torch.long)
                lvl_slots = level_valid.new_zeros((num_imgs, k))
                counts = level_valid.sum(1)
                for count in counts.unique().tolist():
                    kc = min(self.topk, count)
                    if kc == 0:
                        continue
                    imgs = (counts == count).nonzero()[:, 0]
                    # Each image's remaining priors, in order: the sequence
                    # mmdetection's per-image topk sees.
                    keep = level_valid[imgs].nonzero()[:, 1].view(-1, count)
                    compact = level[imgs].gather(
                        2, keep[:, None, :].expand(-1, num_gts, -1))
                    local = compact.topk(kc, dim=2, largest=False)[1]
                    chosen = keep.gather(1, local.flatten(1)).view_as(local)
                    lvl_idxs[imgs, :, :kc] = chosen + start
                    lvl_slots[imgs, :kc] = True
                idxs.append(lvl_idxs)
                valid.append(lvl_slots)
            start = end
        if not idxs:
            return (distances.new_zeros((num_imgs, num_gts, 0),
                                        dtype=torch.long),
                    distances.new_zeros((num_imgs, 0), dtype=torch.bool))
        return torch.cat(idxs, 2), torch.cat(valid, 1)

    @staticmethod
    def _thresholds(cand_ious: Tensor, cand_valid: Tensor,
                    gt_valid: Tensor) -> Tensor:
        """Step 4: ``(B, G)`` mean + std of each ground truth's candidate
        IoUs ``cand_ious (B, G, K)``, reduced over exactly the image's
        contiguous ``(K_b, G_b)`` block, as mmdetection lays it out (see
        the module docstring); NaN on padding."""
        per_image = cand_ious.transpose(1, 2).contiguous()  # (B, K, G)
        if bool(cand_valid.all()) and bool(gt_valid.all()):
            return per_image.mean(1) + per_image.std(1)
        num_imgs, _, num_gts = per_image.shape
        thr = per_image.new_full((num_imgs, num_gts), float('nan'))
        # Valid slots / ground truths first, in their order.
        slot_order = torch.sort((~cand_valid).byte(), dim=1, stable=True)[1]
        gt_order = torch.sort((~gt_valid).byte(), dim=1, stable=True)[1]
        shapes = torch.stack([cand_valid.sum(1), gt_valid.sum(1)], 1)
        for num_k, num_g in shapes.unique(dim=0).tolist():
            if num_k == 0 or num_g == 0:
                continue
            imgs = (shapes == shapes.new_tensor([num_k, num_g])).all(
                1).nonzero()[:, 0]
            slots = slot_order[imgs, :num_k]
            gts = gt_order[imgs, :num_g]
            block = per_image[imgs].gather(
                1, slots[:, :, None].expand(-1, -1, num_gts)).gather(
                    2, gts[:, None, :].expand(-1, num_k, -1))
            value = block.mean(1) + block.std(1)  # (n, num_g)
            thr[imgs] = thr[imgs].scatter(1, gts, value)
        return thr

    def __repr__(self) -> str:
        return (f'ATSSAssigner(topk={self.topk}, '
                f'ignore_iof_thr={self.ignore_iof_thr})')


def _finish(num_gts: Tensor, gt_inds: Tensor, max_overlaps: Tensor,
            gt_labels: Tensor, priors_valid: Optional[Tensor]) -> AssignResult:
    """Mark invalid priors (-1 everywhere) and look up the labels."""
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
