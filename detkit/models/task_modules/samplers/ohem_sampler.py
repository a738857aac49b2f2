"""Online hard example mining (Shrivastava et al., 2016): the R-CNN stage
trains on the RoIs its box head currently gets most wrong
(docs/sampling.md).

The counts are :class:`RandomSampler`'s (at most ``int(num *
pos_fraction)`` positives, then ``num - #pos`` negatives, capped by
``neg_pos_ub``); only the choice among too many candidates differs. When an
image has more positive (or negative) candidates than wanted, all of them
are scored with the current weights and without gradients: pooled and run
through the RoI head (``context._bbox_forward``), then
``context.bbox_head.loss(cls_score, None, rois, labels, ones, None, None,
reduction_override='none')[loss_key]`` against each candidate's assigned
label (background ``num_classes`` for negatives). The ``k`` largest losses
are kept (``topk(k)``). The kept candidates are read in ascending index,
like every sampler's (mmdetection sorts them with ``unique``), so the RoI
order is the usual one. Nothing random is drawn.

Batched: every candidate that needs scoring, of all images and of both
kinds, goes through one RoI forward and one loss call. ``topk`` then runs
once per (image, kind) on exactly the 1-D loss vector mmdetection's
per-image call ranks (that image's positives, or negatives, in ascending
index), so ties break as torch breaks them there. An RoI head whose
forward depends on the batch (a BatchNorm in training mode) is instead run
group by group, as mmdetection runs it, which also updates its running
statistics the same way.
"""
from typing import List, Optional, Sequence, Tuple

import torch
from torch import Tensor
from torch.nn.modules.batchnorm import _BatchNorm

from ....registry import TASK_UTILS
from ..assigners.assign_result import AssignResult
from .random_sampler import RandomSampler, oversubscribed


@TASK_UTILS.register_module()
class OHEMSampler(RandomSampler):
    """Hard-example sampler of the R-CNN stage.

    Args:
        num: RoIs sampled per image.
        pos_fraction: at most ``int(num * pos_fraction)`` positives.
        context: the RoI head that scores candidates (its ``_bbox_forward``
            and ``bbox_head``); ``StandardRoIHead`` passes itself.
        neg_pos_ub: negatives at most ``int(neg_pos_ub * max(1, #pos))``;
            -1 for no bound.
        add_gt_as_proposals: the ground truths become candidates.
        loss_key: the entry of ``bbox_head.loss`` that ranks candidates.
    """

    def __init__(self,
                 num: int,
                 pos_fraction: float,
                 context=None,
                 neg_pos_ub: float = -1,
                 add_gt_as_proposals: bool = True,
                 loss_key: str = 'loss_cls',
                 **kwargs):
        super().__init__(num, pos_fraction, neg_pos_ub, add_gt_as_proposals)
        if not (hasattr(context, '_bbox_forward')
                and hasattr(context, 'bbox_head')):
            raise ValueError(
                'OHEMSampler scores candidate RoIs with an RoI head, passed '
                'as context= (StandardRoIHead passes itself); got context='
                f'{type(context).__name__}. Use it as the R-CNN sampler '
                "(train_cfg.rcnn.sampler), not in a dense head's train_cfg")
        self.context = context
        self.loss_key = loss_key

    def sample_batch(self,
                     assign_result: AssignResult,
                     priors: Optional[Tensor] = None,
                     feats: Optional[Sequence[Tensor]] = None,
                     **kwargs) -> Tuple[Tensor, Tensor]:
        """Bool ``(pos_mask, neg_mask)`` shaped like ``gt_inds``.

        Args:
            assign_result: over the candidates, ``gt_inds (B, M)`` (or
                ``(M,)``), ground truths already prepended.
            priors: ``(B, M, 4)`` (or ``(M, 4)``) candidate boxes, input
                pixels; needed only when some image has too many.
            feats: the feature maps the RoI head pools from, per level
                ``(B, C, H, W)``.
        """
        gt_inds, labels = assign_result.gt_inds, assign_result.labels
        batched = gt_inds.dim() == 2
        if not batched:
            gt_inds, labels = gt_inds[None], labels[None]
            priors = None if priors is None else priors[None]
        pos_mask, neg_mask = gt_inds > 0, gt_inds == 0
        groups = oversubscribed(pos_mask, neg_mask, self.num,
                                self.pos_fraction, self.neg_pos_ub)
        if groups:
            if priors is None or feats is None:
                raise ValueError(
                    'OHEMSampler.sample_batch needs priors= (the candidate '
                    'boxes) and feats= (the feature maps) to score an image '
                    'with more candidates than wanted')
            self._keep_hardest(groups, pos_mask, neg_mask, labels, priors,
                               feats)
        if not batched:
            return pos_mask[0], neg_mask[0]
        return pos_mask, neg_mask

    def _keep_hardest(self, groups: List[Tuple[int, bool, int, int]],
                      pos_mask: Tensor, neg_mask: Tensor, labels: Tensor,
                      priors: Tensor, feats: Sequence[Tensor]) -> None:
        """Narrow ``pos_mask`` / ``neg_mask`` ``(B, M)`` in place to the
        hardest ``num_wanted`` of each oversubscribed group."""
        device = pos_mask.device
        mine = torch.zeros((pos_mask.size(0), 2), dtype=torch.bool)
        for img, negative, _, _ in groups:
            mine[img, int(negative)] = True
        mine = mine.to(device)
        scored_pos = pos_mask & mine[:, :1]
        scored_neg = neg_mask & mine[:, 1:]
        # The scored candidates group after group (image by image,
        # positives first, as ``groups`` lists them), each ascending.
        img, cand = (scored_pos | scored_neg).nonzero(as_tuple=True)
        negative = scored_neg[img, cand]
        order = (img * 2 + negative).argsort(stable=True)
        img, cand, negative = img[order], cand[order], negative[order]
        num_classes = self.context.bbox_head.num_classes
        targets = torch.where(negative, labels.new_tensor(num_classes),
                              labels[img, cand])
        boxes = priors[img, cand, :4]
        rois = torch.cat([img[:, None].to(boxes.dtype), boxes], 1)
        losses = self._losses(rois, targets, feats,
                              [size for _, _, size, _ in groups])

        keep = torch.zeros_like(negative)
        start = 0
        for _, _, size, num_wanted in groups:
            hardest = losses[start:start + size].topk(num_wanted).indices
            keep[start + hardest] = True
            start += size
        pos_mask &= ~scored_pos
        neg_mask &= ~scored_neg
        pos_mask[img[keep & ~negative], cand[keep & ~negative]] = True
        neg_mask[img[keep & negative], cand[keep & negative]] = True

    def _losses(self, rois: Tensor, labels: Tensor, feats: Sequence[Tensor],
                sizes: List[int]) -> Tensor:
        """``(S,)`` loss of each RoI ``(S, 5)`` against ``labels (S,)``."""
        context = self.context
        with torch.no_grad():
            if self._batch_dependent():
                cls_score = torch.cat([
                    context._bbox_forward(feats, group)['cls_score']
                    for group in rois.split(sizes)
                ])
            else:
                cls_score = context._bbox_forward(feats, rois)['cls_score']
            losses = context.bbox_head.loss(
                cls_score=cls_score,
                bbox_pred=None,
                rois=rois,
                labels=labels,
                label_weights=cls_score.new_ones(cls_score.size(0)),
                bbox_targets=None,
                bbox_weights=None,
                reduction_override='none')
        if self.loss_key not in losses:
            raise KeyError(
                f'OHEMSampler: loss_key {self.loss_key!r} is not among the '
                f'box head losses {sorted(losses)}; set '
                'train_cfg.rcnn.sampler.loss_key to one of them')
        return losses[self.loss_key]

    def _batch_dependent(self) -> bool:
        """Whether one RoI's scores depend on the others scored with it."""
        modules = getattr(self.context, 'modules', None)
        return modules is not None and any(
            isinstance(m, _BatchNorm) and m.training for m in modules())

    def __repr__(self) -> str:
        return (f'OHEMSampler(num={self.num}, '
                f'pos_fraction={self.pos_fraction}, '
                f'neg_pos_ub={self.neg_pos_ub}, '
                f'add_gt_as_proposals={self.add_gt_as_proposals}, '
                f'loss_key={self.loss_key!r})')
