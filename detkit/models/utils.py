"""Small helpers shared by heads and detectors."""
from typing import List, Optional, Sequence, Tuple

import torch
from mmengine.structures import InstanceData
from torch import Tensor


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


def pad_instances(batch_instances: Sequence[Optional[InstanceData]],
                  device,
                  with_labels: bool = True) -> Tuple[Tensor, Tensor, Tensor]:
    """Pad per-image boxes to the batch's largest count, for batched
    assignment.

    Args:
        batch_instances: B InstanceData with ``bboxes (G_i, 4)`` and
            ``labels (G_i,)`` (or None for no boxes).

    Returns:
        tuple: ``bboxes (B, G, 4)`` float (zero-padded), ``labels (B, G)``
        long (padded with -1), ``valid (B, G)`` bool, where
        ``G = max(G_i)`` (0 when no image has a box).
    """
    counts = [0 if inst is None else len(inst) for inst in batch_instances]
    num_imgs, max_count = len(counts), max(counts, default=0)
    bboxes = torch.zeros((num_imgs, max_count, 4), device=device)
    labels = torch.full((num_imgs, max_count), -1, dtype=torch.long,
                        device=device)
    valid = torch.zeros((num_imgs, max_count), dtype=torch.bool,
                        device=device)
    for i, (inst, count) in enumerate(zip(batch_instances, counts)):
        if count == 0:
            continue
        bboxes[i, :count] = inst.bboxes.to(device=device, dtype=bboxes.dtype)
        if with_labels:
            labels[i, :count] = inst.labels.to(device)
        valid[i, :count] = True
    return bboxes, labels, valid


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
