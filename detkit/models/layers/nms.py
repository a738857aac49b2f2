"""Non-maximum suppression with mmcv / mmdetection semantics.

Boxes are float ``(N, 4)`` ``(x1, y1, x2, y2)`` pixels. A box is suppressed
when its IoU with a higher-scoring kept box is ``> iou_threshold``
(``IoU = inter / (area1 + area2 - inter)``, no +1); the kernel is
``torchvision.ops.nms``. See docs/dense_prediction.md and
docs/faster_rcnn.md.
"""
import math
from typing import Optional, Tuple

import torch
from torch import Tensor
from torchvision.ops import nms as tv_nms

# Keys of an ``nms_cfg`` that configure each NMS kernel itself.
_NMS_KEYS = ('iou_threshold', 'offset', 'score_threshold', 'max_num')
_SOFT_NMS_KEYS = ('iou_threshold', 'sigma', 'min_score', 'method', 'offset')
_SOFT_NMS_METHODS = ('naive', 'linear', 'gaussian')
_SOFT_NMS_DEFAULTS = dict(iou_threshold=0.3, sigma=0.5, min_score=1e-3,
                          method='linear', offset=0)


def nms(boxes: Tensor,
        scores: Tensor,
        iou_threshold: float,
        offset: int = 0,
        score_threshold: float = 0,
        max_num: int = -1) -> Tuple[Tensor, Tensor]:
    """mmcv's ``nms``: ``(dets (K, 5), keep (K,))`` by descending score.

    Args:
        boxes: ``(N, 4)``.
        scores: ``(N,)``.
        iou_threshold: suppress IoU strictly above this.
        offset: only 0 (mmdetection 3.x boxes have no +1 widths).
        score_threshold: drop boxes with score ``<=`` this first (when > 0).
        max_num: keep at most this many (when > 0).
    """
    if offset != 0:
        raise ValueError(f'nms: offset={offset} is not supported; '
                         'mmdetection 3.x boxes use offset 0 (no +1 widths)')
    inds = None
    if score_threshold > 0:
        inds = (scores > score_threshold).nonzero(as_tuple=True)[0]
        boxes, scores = boxes[inds], scores[inds]
    keep = tv_nms(boxes, scores, float(iou_threshold))
    if max_num > 0:
        keep = keep[:max_num]
    dets = torch.cat([boxes[keep], scores[keep, None]], -1)
    if inds is not None:
        keep = inds[keep]
    return dets, keep


def soft_nms(boxes: Tensor,
             scores: Tensor,
             iou_threshold: float = 0.3,
             sigma: float = 0.5,
             min_score: float = 1e-3,
             method: str = 'linear',
             offset: int = 0) -> Tuple[Tensor, Tensor]:
    """Soft-NMS (Bodla et al., 2017), mmcv's ``soft_nms``: ``(dets (K, 5),
    keep (K,))`` with the decayed scores, by descending score.

    Repeatedly take the remaining box with the highest current score, then
    multiply the score of every other remaining box by a weight of its IoU
    with it (``IoU = inter / (area1 + area2 - inter)``, no +1):

    - ``'linear'``: ``1 - IoU`` where ``IoU > iou_threshold``, else 1;
    - ``'gaussian'``: ``exp(-IoU^2 / sigma)`` for every box (the threshold
      is not used);
    - ``'naive'``: 0 where ``IoU > iou_threshold`` (hard NMS);

    and drop the boxes whose score is now below ``min_score`` (the first box
    taken is kept whatever its score, as in mmcv). A score only ever
    decreases, so the boxes come out in descending order of their final
    scores. Among equal scores the lowest input index is taken first
    (mmcv's in-place swaps may take another one of them).

    Args:
        boxes: ``(N, 4)``.
        scores: ``(N,)``.
        offset: only 0.
    """
    return _grouped_soft_nms(boxes, scores, None, iou_threshold, sigma,
                             min_score, method, offset)


def _grouped_soft_nms(boxes: Tensor, scores: Tensor,
                      groups: Optional[Tensor], iou_threshold: float,
                      sigma: float, min_score: float, method: str,
                      offset: int) -> Tuple[Tensor, Tensor]:
    """:func:`soft_nms` within each group of ``groups (N,)`` (None: one
    group), all groups in step.

    Boxes of different groups never interact: for the shifted boxes of
    :func:`batched_nms` their IoU is 0, so a weight of exactly 1 (linear,
    naive: IoU not above the threshold; gaussian: ``exp(-0) = 1``), and a
    single sequential pass over all boxes would take each group's boxes in
    the same order and multiply them by the same weights. Running the
    groups side by side takes ``max group size`` steps instead of ``N``;
    each step is one vectorised pass over the boxes. The kept boxes are then
    stably sorted by score (ties: earlier step, then lower index).
    """
    if offset != 0:
        raise ValueError(f'soft_nms: offset={offset} is not supported; '
                         'mmdetection 3.x boxes use offset 0 (no +1 widths)')
    if method not in _SOFT_NMS_METHODS:
        raise ValueError(f'soft_nms: method must be one of '
                         f'{_SOFT_NMS_METHODS}, got {method!r}')
    if method == 'gaussian' and sigma <= 0:
        raise ValueError(f'soft_nms: sigma must be positive, got {sigma}')
    num = scores.numel()
    if num == 0:
        return boxes.new_zeros(0, 5), scores.new_zeros(0, dtype=torch.long)
    if groups is None:
        groups = scores.new_zeros(num, dtype=torch.long)
    _, groups = torch.unique(groups, return_inverse=True)
    num_groups = int(groups.max()) + 1
    index = torch.arange(num, device=scores.device)
    scores = scores.clone()
    areas = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
    # A box starting below min_score would be dropped after the first step
    # of a sequential pass, unless it is the very first box taken.
    alive = scores >= min_score
    alive[scores.argmax()] = True
    neg_inf = scores.new_tensor(-math.inf)
    keep, kept_scores = [], []
    while bool(alive.any()):
        # each group's best remaining box, the lowest index among equals
        masked = torch.where(alive, scores, neg_inf)
        best = masked.new_full((num_groups, ), -math.inf).scatter_reduce(
            0, groups, masked, 'amax')
        is_best = alive & (masked == best.index_select(0, groups))
        first = index.new_full((num_groups, ), num).scatter_reduce(
            0, groups, torch.where(is_best, index, num), 'amin')
        taken = first[first < num]
        keep.append(taken)
        kept_scores.append(scores[taken])
        alive[taken] = False
        # IoU of every box with the box its group took in this step
        # (index_select: plain advanced indexing is far slower on CPU)
        partner = index.new_zeros(num_groups)
        partner[groups[taken]] = taken
        partner = partner.index_select(0, groups)
        other = boxes.index_select(0, partner)
        lt = torch.max(boxes[:, :2], other[:, :2])
        rb = torch.min(boxes[:, 2:], other[:, 2:])
        inter = (rb - lt).clamp(min=0).prod(dim=1)
        ious = inter / (areas + areas.index_select(0, partner) - inter)
        if method == 'gaussian':
            weight = torch.exp(-(ious * ious) / sigma)
        elif method == 'linear':
            weight = torch.where(ious > iou_threshold, 1 - ious,
                                 torch.ones_like(ious))
        else:
            weight = (ious <= iou_threshold).to(ious.dtype)
        scores = torch.where(alive, scores * weight, scores)
        alive &= scores >= min_score
    keep = torch.cat(keep)
    kept_scores = torch.cat(kept_scores)
    order = kept_scores.sort(descending=True, stable=True)[1]
    keep, kept_scores = keep[order], kept_scores[order]
    return torch.cat([boxes[keep], kept_scores[:, None]], -1), keep


# type -> (kernel, keys it takes, whether iou_threshold must be given)
_KERNELS = {
    'nms': (nms, _NMS_KEYS, True),
    'soft_nms': (soft_nms, _SOFT_NMS_KEYS, False),
}


def _nms_kwargs(nms_cfg: dict) -> Tuple[callable, dict, int]:
    """Split an ``nms_cfg`` into its kernel, the kernel's kwargs and
    ``split_thr``."""
    cfg = dict(nms_cfg)
    nms_type = cfg.pop('type', 'nms')
    if nms_type not in _KERNELS:
        raise ValueError(f"batched_nms: nms_cfg type {nms_type!r} is not "
                         "supported; use dict(type='nms', iou_threshold=...) "
                         "or dict(type='soft_nms', iou_threshold=..., "
                         "sigma=..., min_score=..., method='linear')")
    kernel, keys, needs_threshold = _KERNELS[nms_type]
    cfg.pop('class_agnostic', None)
    split_thr = cfg.pop('split_thr', 10000)
    if 'iou_thr' in cfg:  # the pre-mmcv-1.0 name of the key
        cfg.setdefault('iou_threshold', cfg.pop('iou_thr'))
    unknown = sorted(set(cfg) - set(keys))
    if unknown or (needs_threshold and 'iou_threshold' not in cfg):
        raise ValueError(
            f'batched_nms: nms_cfg {nms_cfg!r} ({nms_type}) may hold '
            f'{", ".join(keys)}, split_thr, class_agnostic'
            f'{" and needs iou_threshold" if needs_threshold else ""}; '
            f'unknown keys: {unknown}')
    return kernel, cfg, split_thr


def batched_nms(boxes: Tensor,
                scores: Tensor,
                idxs: Tensor,
                nms_cfg: Optional[dict],
                class_agnostic: bool = False) -> Tuple[Tensor, Tensor]:
    """NMS within each group ``idxs`` (class or level), mmcv semantics.

    Groups are separated by shifting every box of group ``k`` by
    ``k * (max coordinate + 1)`` and running one NMS; the shift is kept
    exactly as mmcv computes it because float32 IoUs on shifted boxes can
    differ in the last bit, which decides ties at the threshold. With
    ``N >= split_thr`` (default 10000) NMS runs group by group on the same
    shifted boxes and the union is re-sorted by score.

    Args:
        boxes: ``(N, 4)``.
        scores: ``(N,)``.
        idxs: ``(N,)`` group of each box.
        nms_cfg: ``dict(type='nms', iou_threshold=..., [split_thr],
            [class_agnostic], [score_threshold], [max_num])``, or
            ``dict(type='soft_nms', [iou_threshold=0.3], [sigma=0.5],
            [min_score=1e-3], [method='linear'])`` (:func:`soft_nms`; the
            scores returned are the decayed ones); None sorts only.
        class_agnostic: ignore ``idxs`` (overridden by the cfg key).

    Returns:
        ``dets (K, 5)`` = ``[x1, y1, x2, y2, score]`` by descending score
        and ``keep (K,)``, indices into the inputs.
    """
    if nms_cfg is None:
        scores, inds = scores.sort(descending=True)
        return torch.cat([boxes[inds], scores[:, None]], -1), inds
    class_agnostic = nms_cfg.get('class_agnostic', class_agnostic)
    kernel, kwargs, split_thr = _nms_kwargs(nms_cfg)
    if class_agnostic:
        boxes_for_nms = boxes
    else:
        if boxes.numel() == 0:
            boxes_for_nms = boxes
        else:
            max_coordinate = boxes.max()
            offsets = idxs.to(boxes) * (max_coordinate +
                                        torch.tensor(1).to(boxes))
            boxes_for_nms = boxes + offsets[:, None]

    if kernel is soft_nms:
        # Groups side by side in one call (split_thr changes nothing: the
        # per-group runs of mmcv's large-input path give the same result).
        dets, keep = _grouped_soft_nms(
            boxes_for_nms, scores, None if class_agnostic else idxs,
            **dict(_SOFT_NMS_DEFAULTS, **kwargs))
        boxes = boxes[keep]
        scores = dets[:, -1]
    elif boxes_for_nms.shape[0] < split_thr:
        dets, keep = kernel(boxes_for_nms, scores, **kwargs)
        boxes = boxes[keep]
        scores = dets[:, -1]
    else:
        max_num = kwargs.pop('max_num', -1)
        total_mask = scores.new_zeros(scores.size(), dtype=torch.bool)
        scores_after_nms = scores.new_zeros(scores.size())
        # mmcv's large-input path: the same shifted boxes, one group at a
        # time (a group's boxes never reach into another's only if the
        # coordinates are non-negative, so a single NMS is not equivalent).
        for group in torch.unique(idxs):
            mask = (idxs == group).nonzero(as_tuple=True)[0]
            dets, keep = kernel(boxes_for_nms[mask], scores[mask], **kwargs)
            total_mask[mask[keep]] = True
            scores_after_nms[mask[keep]] = dets[:, -1]
        keep = total_mask.nonzero(as_tuple=True)[0]
        scores, inds = scores_after_nms[keep].sort(descending=True)
        keep = keep[inds]
        boxes = boxes[keep]
        if max_num > 0:
            keep, boxes, scores = keep[:max_num], boxes[:max_num], scores[
                :max_num]
    return torch.cat([boxes, scores[:, None]], -1), keep


def multiclass_nms(multi_bboxes: Tensor,
                   multi_scores: Tensor,
                   score_thr: float,
                   nms_cfg: Optional[dict],
                   max_num: int = -1,
                   score_factors: Optional[Tensor] = None,
                   return_inds: bool = False,
                   box_dim: int = 4):
    """Per-class NMS over ``(box, class)`` pairs (docs/faster_rcnn.md).

    Args:
        multi_bboxes: ``(N, 4)`` shared by all classes, or ``(N, 4 * C)``
            class-specific (layout ``c * 4 + k``).
        multi_scores: ``(N, C + 1)``; the last column (background) is
            ignored.
        score_thr: keep pairs with score ``> score_thr`` (tested before
            ``score_factors`` are applied).
        nms_cfg: as in :func:`batched_nms`.
        max_num: keep at most this many (when > 0).
        score_factors: ``(N,)`` multiplied into the scores of every class.
        return_inds: also return the kept pairs' indices into the
            flattened ``N * C`` list (``n * C + c``).
        box_dim: 4.

    Returns:
        ``dets (K, 5)`` by descending score, ``labels (K,)`` in ``[0, C)``
        and, with ``return_inds``, ``inds (K,)``.
    """
    num_boxes = multi_scores.size(0)
    num_classes = multi_scores.size(1) - 1
    if multi_bboxes.shape[1] > box_dim:
        bboxes = multi_bboxes.reshape(num_boxes, -1, box_dim)
        if bboxes.size(1) != num_classes:
            raise ValueError(
                'multiclass_nms: class-specific boxes '
                f'{tuple(multi_bboxes.shape)} do not match {num_classes} '
                'classes of multi_scores '
                f'{tuple(multi_scores.shape)} (last column = background)')
    else:
        bboxes = multi_bboxes[:, None].expand(num_boxes, num_classes, box_dim)
    scores = multi_scores[:, :-1]
    labels = torch.arange(num_classes, device=scores.device)
    labels = labels.view(1, -1).expand_as(scores)

    bboxes = bboxes.reshape(-1, box_dim)
    scores = scores.reshape(-1)
    labels = labels.reshape(-1)
    valid_mask = scores > score_thr
    if score_factors is not None:
        scores = scores * score_factors.view(-1, 1).expand(
            num_boxes, num_classes).reshape(-1)
    inds = valid_mask.nonzero(as_tuple=True)[0]
    bboxes, scores, labels = bboxes[inds], scores[inds], labels[inds]

    if bboxes.numel() == 0:
        dets = torch.cat([bboxes, scores[:, None]], -1)
        return (dets, labels, inds) if return_inds else (dets, labels)

    dets, keep = batched_nms(bboxes, scores, labels, nms_cfg)
    if max_num > 0:
        dets, keep = dets[:max_num], keep[:max_num]
    if return_inds:
        return dets, labels[keep], inds[keep]
    return dets, labels[keep]
