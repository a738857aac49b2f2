"""IoU / IoF between two box sets, as an assigner's ``iou_calculator``."""
import torch
from torch import Tensor

from ....registry import TASK_UTILS
from ....structures import bbox_overlaps


def pairwise_overlaps(bboxes1: Tensor, bboxes2: Tensor, mode: str = 'iou',
                      eps: float = 1e-6) -> Tensor:
    """``bbox_overlaps(bboxes1, bboxes2, mode)`` (the full ``(..., M, N)``
    matrix), computed one coordinate at a time and in place.

    Every output element goes through the same float operations in the same
    order as :func:`detkit.structures.bbox_overlaps`, so the results are
    bitwise equal; but no ``(..., M, N, 2)`` corner tensors are made, which
    cuts the memory traffic of the assigner's ``(B, G, N)`` IoU by half.
    """
    if mode not in ('iou', 'iof'):
        raise ValueError(f"pairwise_overlaps: mode must be 'iou' or 'iof', "
                         f'got {mode!r}')
    a = bboxes1[..., :, None, :]
    b = bboxes2[..., None, :, :]
    area1 = (bboxes1[..., 2] - bboxes1[..., 0]) * (
        bboxes1[..., 3] - bboxes1[..., 1])
    width = torch.minimum(a[..., 2], b[..., 2]).sub_(
        torch.maximum(a[..., 0], b[..., 0])).clamp_(min=0)
    height = torch.minimum(a[..., 3], b[..., 3]).sub_(
        torch.maximum(a[..., 1], b[..., 1])).clamp_(min=0)
    overlap = width.mul_(height)
    del height
    if mode == 'iou':
        area2 = (bboxes2[..., 2] - bboxes2[..., 0]) * (
            bboxes2[..., 3] - bboxes2[..., 1])
        union = torch.add(area1[..., None], area2[..., None, :]).sub_(overlap)
    else:
        union = area1[..., None].expand_as(overlap).clone()
    return overlap.div_(union.clamp_(min=eps))


@TASK_UTILS.register_module()
class BboxOverlaps2D:
    """``bbox_overlaps`` with mmdetection's optional fp16 trick.

    Args:
        scale: with ``dtype='fp16'``, boxes are divided by this first to
            stay inside the fp16 range (IoU is scale invariant).
        dtype: None (the boxes' dtype) or ``'fp16'`` (compute in half
            precision to save memory; results on CPU come back as float32).
    """

    def __init__(self, scale: float = 1., dtype=None):
        if dtype not in (None, 'fp16'):
            raise ValueError(f"BboxOverlaps2D: dtype must be None or 'fp16', "
                             f'got {dtype!r}')
        self.scale = scale
        self.dtype = dtype

    def __call__(self,
                 bboxes1: Tensor,
                 bboxes2: Tensor,
                 mode: str = 'iou',
                 is_aligned: bool = False) -> Tensor:
        """Overlaps between ``bboxes1 (..., M, 4|5)`` and ``bboxes2 (..., N,
        4|5)``: ``(..., M, N)`` or, aligned, ``(..., M)``. A fifth column
        (a score) is ignored."""
        if bboxes1.size(-1) == 5:
            bboxes1 = bboxes1[..., :4]
        if bboxes2.size(-1) == 5:
            bboxes2 = bboxes2[..., :4]
        if self.dtype == 'fp16':
            # IoU is scale invariant; dividing first keeps big coordinates
            # inside the fp16 range.
            bboxes1 = (bboxes1 / self.scale).half()
            bboxes2 = (bboxes2 / self.scale).half()
        if is_aligned or bboxes1.size(-1) != 4 or bboxes2.size(-1) != 4:
            overlaps = bbox_overlaps(bboxes1, bboxes2, mode, is_aligned)
        else:
            overlaps = pairwise_overlaps(bboxes1, bboxes2, mode)
        if self.dtype == 'fp16' and not overlaps.is_cuda:
            overlaps = overlaps.float()
        return overlaps

    def __repr__(self) -> str:
        return f'BboxOverlaps2D(scale={self.scale}, dtype={self.dtype})'
