"""Helpers shared by heads and detectors, and the batch currency of the
target programs.

Every training head (the dense heads and the RoI stage) passes the same
tensors between assigner, sampler and target encoding:

* ground truths padded to the batch's largest count: ``bboxes (B, G, 4)``,
  ``labels (B, G)``, ``valid (B, G)`` (:class:`PaddedGts`, made once by
  :func:`pad_gts` from the data samples);
* priors shared by the batch ``(N, 4)`` (anchors) or per image
  ``(B, N, 4)`` (RoI candidates), with a ``(B, N)`` validity mask;
* a batched ``AssignResult`` and ``(B, N)`` positive / negative masks;
* targets ``(B, N, ...)`` from :func:`sampled_targets`.

See docs/anchor_head.md and docs/faster_rcnn.md.
"""
from typing import List, NamedTuple, Optional, Sequence, Tuple

import torch
from mmengine.structures import InstanceData
from torch import Tensor
from torch.nn.utils.rnn import pad_sequence


def unpack_gt_instances(batch_data_samples) -> tuple:
    """Split data samples into ground truths, ignored boxes and metainfo.

    Returns:
        tuple: ``(batch_gt_instances, batch_gt_instances_ignore,
        batch_img_metas)``, three lists of length B; an image without
        ``ignored_instances`` gets ``None``.
    """
    gts, ignores, metas = [], [], []
    for sample in batch_data_samples:
        metas.append(sample.metainfo)
        gts.append(sample.gt_instances)
        ignores.append(sample.ignored_instances if 'ignored_instances' in
                       sample else None)
    return gts, ignores, metas


# -------------------------------------------------------------- padding
def pad_boxes(boxes: Sequence[Tensor], device) -> Tuple[Tensor, Tensor]:
    """Per-image boxes ``(G_i, 4)`` as ``(B, G, 4)`` float32, zero-padded
    to the largest count ``G`` (0 when every image has none), and their
    ``(B, G)`` bool validity."""
    boxes = [b.to(device=device, dtype=torch.float32) for b in boxes]
    sizes = [len(b) for b in boxes]
    counts = torch.tensor(sizes, device=device)
    num = max(sizes, default=0)  # from the host's own numbers: no sync
    padded = pad_sequence(boxes, batch_first=True) if num else \
        torch.zeros((len(boxes), 0, 4), device=device)
    valid = torch.arange(num, device=device)[None, :] < counts[:, None]
    return padded, valid


def pad_instances(batch_instances: Sequence[Optional[InstanceData]],
                  device,
                  with_labels: bool = True) -> Tuple[Tensor, Tensor, Tensor]:
    """Pad per-image boxes to the batch's largest count.

    Args:
        batch_instances: B InstanceData with ``bboxes (G_i, 4)`` and
            ``labels (G_i,)`` (or None for no boxes).

    Returns:
        tuple: ``bboxes (B, G, 4)`` float32 (zero-padded), ``labels (B,
        G)`` long (padded with -1), ``valid (B, G)`` bool, where ``G =
        max(G_i)`` (0 when no image has a box).
    """
    present = [inst for inst in batch_instances
               if inst is not None and len(inst) > 0]
    bboxes, valid = pad_boxes([
        inst.bboxes if inst is not None and len(inst) > 0 else
        torch.zeros((0, 4)) for inst in batch_instances
    ], device)
    labels = torch.full(valid.shape, -1, dtype=torch.long, device=device)
    if with_labels and present:
        labels[valid] = torch.cat(
            [inst.labels.to(device=device, dtype=torch.long)
             for inst in present])
    return bboxes, labels, valid


class PaddedGts(NamedTuple):
    """A batch's ground truths and ignored boxes, padded.

    ``bboxes (B, G, 4)`` x1y1x2y2 pixels of the (resized) input,
    ``labels (B, G)`` long (-1 on padding), ``valid (B, G)`` bool;
    ``ignore_bboxes (B, Gi, 4)`` and ``ignore_valid (B, Gi)``, or None when
    no image has an ignored box.
    """
    bboxes: Tensor
    labels: Tensor
    valid: Tensor
    ignore_bboxes: Optional[Tensor] = None
    ignore_valid: Optional[Tensor] = None


def pad_gts(batch_gt_instances: Sequence[InstanceData],
            batch_gt_instances_ignore=None,
            device=None) -> PaddedGts:
    """:class:`PaddedGts` of per-image ``gt_instances`` (and optional
    ``ignored_instances``, None entries allowed) on ``device``."""
    bboxes, labels, valid = pad_instances(batch_gt_instances, device)
    ignore_bboxes = ignore_valid = None
    if batch_gt_instances_ignore is not None and any(
            ign is not None and len(ign) > 0
            for ign in batch_gt_instances_ignore):
        ignore_bboxes, _, ignore_valid = pad_instances(
            batch_gt_instances_ignore, device, with_labels=False)
    return PaddedGts(bboxes, labels, valid, ignore_bboxes, ignore_valid)


# ------------------------------------------------------------- targets
def sampled_targets(priors: Tensor,
                    gt_bboxes: Tensor,
                    assign_result,
                    pos_mask: Tensor,
                    neg_mask: Tensor,
                    num_classes: int,
                    bbox_coder,
                    reg_decoded_bbox: bool = False,
                    pos_weight: float = -1,
                    class_agnostic: bool = False) -> dict:
    """Classification and box targets of sampled priors, for the batch.

    The one target rule of the anchor heads and of the R-CNN box head:
    a positive takes its ground truth's label (0 when ``class_agnostic``:
    an RPN only knows "object") and the deltas (or, with
    ``reg_decoded_bbox``, the box) of that ground truth; a negative takes
    label ``num_classes`` (background); both get classification weight 1
    (``pos_weight`` for positives when > 0), everything else weight 0.

    Args:
        priors: ``(N, 4)`` shared by the batch or ``(B, N, 4)``.
        gt_bboxes: ``(B, G, 4)`` padded ground truths.
        assign_result: batched ``AssignResult`` (``gt_inds``, ``labels``
            ``(B, N)``).
        pos_mask, neg_mask: ``(B, N)`` bool, the sampled priors.

    Returns:
        dict: ``labels (B, N)`` long, ``label_weights (B, N)``,
        ``bbox_targets (B, N, 4)``, ``bbox_weights (B, N, 4)``.
    """
    num_imgs, num_priors = pos_mask.shape
    # Elementwise selections (no boolean indexing, so no host sync).
    labels = priors.new_full((num_imgs, num_priors), num_classes,
                             dtype=torch.long)
    if class_agnostic:
        labels.masked_fill_(pos_mask, 0)
    else:
        labels = torch.where(pos_mask, assign_result.labels, labels)
    label_weights = (pos_mask | neg_mask).to(priors.dtype)
    if pos_weight > 0:
        label_weights.masked_fill_(pos_mask, pos_weight)

    bbox_targets = priors.new_zeros((num_imgs, num_priors, 4))
    bbox_weights = priors.new_zeros((num_imgs, num_priors, 4))
    # Row-major positives: image by image, ascending prior index (the RoI
    # order of the positives too), so one encode covers the batch.
    img_idx, prior_idx = pos_mask.nonzero(as_tuple=True)
    pos_gt = gt_bboxes[img_idx, assign_result.gt_inds[img_idx, prior_idx] - 1]
    if reg_decoded_bbox:
        bbox_targets[img_idx, prior_idx] = pos_gt
    else:
        pos_priors = (priors[prior_idx] if priors.dim() == 2 else
                      priors[img_idx, prior_idx])
        bbox_targets[img_idx, prior_idx] = bbox_coder.encode(pos_priors,
                                                             pos_gt)
    bbox_weights[img_idx, prior_idx] = 1.0
    return dict(labels=labels, label_weights=label_weights,
                bbox_targets=bbox_targets, bbox_weights=bbox_weights)


def reduce_mean(tensor: Tensor) -> Tensor:
    """The mean of ``tensor`` over the distributed ranks (itself when not
    distributed): heads that normalise by a count summed over the whole
    global batch (FCOS, ATSS) use it so every rank divides by the same
    number."""
    import torch.distributed as dist
    from mmengine.dist import get_world_size, is_distributed
    if not is_distributed():
        return tensor
    tensor = tensor.clone()
    dist.all_reduce(tensor.div_(get_world_size()), op=dist.ReduceOp.SUM)
    return tensor


# --------------------------------------------------------------- layout
def upcast_low_precision(tensors: Sequence[Optional[Tensor]]) -> list:
    """``tensors`` with every float16/bfloat16 one cast to float32 (others,
    and ``None``, as they are).

    Heads decode boxes from these in float32: under fp16/bf16 autocast
    inference, bf16's 8-bit mantissa would put a coordinate near 1000 px
    up to 4 px off.
    """
    return [
        t.float() if t is not None and t.dtype in (torch.float16,
                                                   torch.bfloat16) else t
        for t in tensors
    ]


def levels_to_images(mlvl_tensors: List[Tensor], channels: int) -> Tensor:
    """Flatten per-level head outputs into one tensor per batch.

    Args:
        mlvl_tensors: per level ``(B, A * channels, H, W)``.
        channels: values per anchor (classes, or 4 for boxes).

    Returns:
        ``(B, sum_l H_l * W_l * A, channels)``, ordered level, y, x, anchor
        — the order of the anchors from ``grid_priors``.
    """
    batch = mlvl_tensors[0].size(0)
    if len({t.size(1) for t in mlvl_tensors}) == 1:
        # Same anchors per location on every level (RetinaNet, RPN): cat
        # (B, H*W, A*channels) views (merging H and W never copies), one
        # copy of the head outputs instead of two.
        flat = [t.permute(0, 2, 3, 1).flatten(1, 2) for t in mlvl_tensors]
        out = flat[0] if len(flat) == 1 else torch.cat(flat, dim=1)
        return out.reshape(batch, -1, channels)
    flat = [
        t.permute(0, 2, 3, 1).reshape(batch, -1, channels)
        for t in mlvl_tensors
    ]
    return torch.cat(flat, dim=1)


def images_to_levels(target: Tensor, num_per_level: List[int]) -> List[Tensor]:
    """Split ``(B, N, ...)`` targets back into per-level ``(B, N_l, ...)``."""
    return list(target.split(num_per_level, dim=1))


def empty_instances(device, num_classes_dim=None) -> InstanceData:
    """An InstanceData with zero boxes, scores and labels."""
    results = InstanceData()
    results.bboxes = torch.zeros((0, 4), device=device)
    results.scores = torch.zeros((0, ), device=device)
    results.labels = torch.zeros((0, ), dtype=torch.long, device=device)
    return results
