"""Proposal recall and average recall (AR).

For each image, proposals sorted by score are matched one-to-one to the
ground-truth boxes greedily: repeatedly the (gt, proposal) pair with the
largest IoU is taken and both are removed. A ground truth counts as recalled
at threshold ``t`` when its matched IoU is ``>= t``; recall is the recalled
fraction of all ground truths of the dataset, and AR at ``N`` proposals is
the mean recall over the IoU thresholds (COCO's 0.5:0.05:0.95 by default),
as mmdetection's ``eval_recalls`` / ``CocoMetric(metric='proposal_fast')``
compute it.
"""
import numpy as np

from .np_boxes import box_iou_np

COCO_IOU_THRS = np.linspace(.5, .95, int(np.round((.95 - .5) / .05)) + 1)


def greedy_matched_ious(ious):
    """IoU each ground truth gets in a greedy one-to-one matching.

    Args:
        ious (ndarray): ``(G, P)`` IoUs of ``G`` ground truths with ``P``
            proposals.

    Returns:
        ndarray: ``(G,)``; ground truths left without a proposal get 0.
    """
    ious = np.array(ious, dtype=np.float64)
    matched = np.zeros(ious.shape[0])
    for _ in range(min(ious.shape)):
        gt, prop = np.unravel_index(np.argmax(ious), ious.shape)
        if ious[gt, prop] < 0:
            break
        matched[gt] = ious[gt, prop]
        ious[gt, :] = -1  # each box is used once
        ious[:, prop] = -1
    return matched


def eval_recalls(gts, proposals, proposal_nums=(100, 300, 1000),
                 iou_thrs=0.5, use_legacy_coordinate=False):
    """Recall of proposals for every (number of proposals, IoU threshold).

    Args:
        gts (list[ndarray]): per image, ``(G, 4)`` xyxy ground truths.
        proposals (list[ndarray]): per image, ``(P, 4)`` boxes in
            descending score order, or ``(P, 5)`` with scores in the last
            column (sorted here).
        proposal_nums (int | Sequence[int]): numbers of top proposals.
        iou_thrs (float | Sequence[float]): IoU thresholds.

    Returns:
        ndarray: ``(len(proposal_nums), len(iou_thrs))`` recalls; zeros when
        the dataset has no ground truth.
    """
    nums = np.atleast_1d(np.asarray(proposal_nums, dtype=int))
    thrs = np.atleast_1d(np.asarray(iou_thrs, dtype=np.float64))
    if len(gts) != len(proposals):
        raise ValueError(f'eval_recalls: {len(gts)} images of ground truth '
                         f'but {len(proposals)} of proposals.')
    matched = [[] for _ in nums]  # per proposal number, all images' IoUs
    for img_gts, img_props in zip(gts, proposals):
        img_gts = np.asarray(img_gts, dtype=np.float64).reshape(-1, 4)
        img_props = np.asarray(img_props, dtype=np.float64)
        if img_props.ndim == 2 and img_props.shape[1] == 5:
            order = np.argsort(-img_props[:, 4], kind='stable')
            img_props = img_props[order]
        ious = box_iou_np(img_gts, img_props[:nums.max(), :4],
                          use_legacy_coordinate)
        for k, num in enumerate(nums):
            matched[k].append(greedy_matched_ious(ious[:, :num]))
    matched = np.array([np.concatenate(m) if m else np.zeros(0)
                        for m in matched])
    total = matched.shape[1]
    if total == 0:
        return np.zeros((len(nums), len(thrs)))
    return (matched[:, :, None] >= thrs[None, None, :]).sum(1) / total


def average_recalls(gts, proposals, proposal_nums=(100, 300, 1000),
                    iou_thrs=COCO_IOU_THRS, use_legacy_coordinate=False):
    """AR for each number of proposals: recall averaged over ``iou_thrs``.

    Returns:
        ndarray: ``(len(proposal_nums),)``.
    """
    return eval_recalls(gts, proposals, proposal_nums, iou_thrs,
                        use_legacy_coordinate).mean(axis=1)
