"""IoU / IoF between two box sets, as an assigner's ``iou_calculator``."""
from torch import Tensor

from ....registry import TASK_UTILS
from ....structures import bbox_overlaps


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
            overlaps = bbox_overlaps(bboxes1, bboxes2, mode, is_aligned)
            if not overlaps.is_cuda:
                overlaps = overlaps.float()
            return overlaps
        return bbox_overlaps(bboxes1, bboxes2, mode, is_aligned)

    def __repr__(self) -> str:
        return f'BboxOverlaps2D(scale={self.scale}, dtype={self.dtype})'
