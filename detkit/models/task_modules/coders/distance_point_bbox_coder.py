"""Point <-> box coding by the distances to the four sides (FCOS).

A point ``(x, y)`` and a box ``(x1, y1, x2, y2)`` (pixels, width
``x2 - x1``) give the distances

    l = x - x1    t = y - y1    r = x2 - x    b = y2 - y

(negative when the point is outside the box). ``encode`` optionally clamps
each distance to ``[0, max_dis - eps]`` (a distribution head's last bin);
``decode`` inverts it, ``(x - l, y - t, x + r, y + b)``, and with
``clip_border`` and a ``max_shape = (h, w)`` clips x to ``[0, w]`` and y to
``[0, h]``. No normalisation: FCOS's ``norm_on_bbox`` divides by the stride
in the head, not here. The arithmetic is mmdetection's, element by element,
so results match it bit for bit. See docs/box_coders.md.
"""
from typing import Optional, Sequence, Union

import numpy as np
import torch
from torch import Tensor

from ....registry import TASK_UTILS


@TASK_UTILS.register_module()
class DistancePointBBoxCoder:
    """Distance ``(l, t, r, b)`` box coder.

    Args:
        clip_border: clip decoded boxes to ``max_shape`` when one is given.
        use_box_type: kept for config compatibility; detkit boxes are plain
            tensors, so it must be False.
    """

    encode_size = 4

    def __init__(self, clip_border: bool = True, use_box_type: bool = False):
        if use_box_type:
            raise ValueError('DistancePointBBoxCoder: use_box_type=True is '
                             'not supported; detkit boxes are plain (N, 4) '
                             'tensors. Remove use_box_type from the config.')
        self.clip_border = clip_border

    def encode(self,
               points: Tensor,
               gt_bboxes: Tensor,
               max_dis: Optional[float] = None,
               eps: float = 0.1) -> Tensor:
        """Distances ``(..., 4)`` from ``points (..., 2)`` to the sides of
        ``gt_bboxes (..., 4)`` (leading dims broadcast), each clamped to
        ``[0, max_dis - eps]`` when ``max_dis`` is given."""
        _check('encode', points, gt_bboxes, 'gt_bboxes')
        left = points[..., 0] - gt_bboxes[..., 0]
        top = points[..., 1] - gt_bboxes[..., 1]
        right = gt_bboxes[..., 2] - points[..., 0]
        bottom = gt_bboxes[..., 3] - points[..., 1]
        if max_dis is not None:
            left = left.clamp(min=0, max=max_dis - eps)
            top = top.clamp(min=0, max=max_dis - eps)
            right = right.clamp(min=0, max=max_dis - eps)
            bottom = bottom.clamp(min=0, max=max_dis - eps)
        return torch.stack([left, top, right, bottom], -1)

    def decode(self,
               points: Tensor,
               pred_bboxes: Tensor,
               max_shape: Optional[Union[Sequence, Tensor]] = None) -> Tensor:
        """Boxes ``(..., 4)`` from distances.

        Args:
            points: ``(N, 2)`` shared by the batch, or ``(B, N, 2)``.
            pred_bboxes: ``(N, 4)`` or ``(B, N, 4)`` distances
                ``(l, t, r, b)``; leading dims broadcast with ``points``'.
            max_shape: ``(h, w)`` for all boxes, or one ``(h, w)`` per image
                (a sequence of pairs or a ``(B, 2)`` tensor; extra trailing
                entries such as channels are ignored) when the inputs have
                a leading batch dim ``B``. Used only with ``clip_border``.

        Returns:
            ``(x1, y1, x2, y2)`` boxes, shaped like the broadcast inputs,
            in their dtype (gradients flow through the clipping).
        """
        _check('decode', points, pred_bboxes, 'pred_bboxes')
        x1 = points[..., 0] - pred_bboxes[..., 0]
        y1 = points[..., 1] - pred_bboxes[..., 1]
        x2 = points[..., 0] + pred_bboxes[..., 2]
        y2 = points[..., 1] + pred_bboxes[..., 3]
        if self.clip_border and max_shape is not None:
            x1, y1, x2, y2 = _clip(x1, y1, x2, y2, max_shape)
        return torch.stack([x1, y1, x2, y2], -1)

    def __repr__(self) -> str:
        return f'DistancePointBBoxCoder(clip_border={self.clip_border})'


def _check(where: str, points: Tensor, boxes: Tensor, name: str) -> None:
    if points.size(-1) != 2 or boxes.size(-1) != 4:
        raise ValueError(
            f'DistancePointBBoxCoder.{where}: points must be (..., 2) and '
            f'{name} (..., 4), got {tuple(points.shape)} and '
            f'{tuple(boxes.shape)}')
    try:
        torch.broadcast_shapes(points.shape[:-1], boxes.shape[:-1])
    except RuntimeError:
        raise ValueError(
            f'DistancePointBBoxCoder.{where}: the leading dims of points '
            f'{tuple(points.shape)} and {name} {tuple(boxes.shape)} do not '
            'broadcast; give (N, 2) or (B, N, 2) points for (B, N, 4) '
            'boxes') from None


def _is_per_image(max_shape) -> bool:
    if isinstance(max_shape, (Tensor, np.ndarray)):
        return max_shape.ndim == 2
    return len(max_shape) > 0 and isinstance(
        max_shape[0], (Sequence, Tensor, np.ndarray))


def _clip(x1: Tensor, y1: Tensor, x2: Tensor, y2: Tensor, max_shape):
    """Clip the coordinates ``(...)`` to ``[0, w]`` / ``[0, h]`` of one
    ``(h, w)`` or of one shape per image along the leading dim."""
    if not _is_per_image(max_shape):
        h, w = float(max_shape[0]), float(max_shape[1])
        return (x1.clamp(min=0, max=w), y1.clamp(min=0, max=h),
                x2.clamp(min=0, max=w), y2.clamp(min=0, max=h))
    if isinstance(max_shape, Tensor):
        shapes = max_shape[:, :2].to(device=x1.device, dtype=x1.dtype)
    else:
        shapes = torch.as_tensor(
            np.asarray([[float(s[0]), float(s[1])] for s in max_shape]),
            dtype=x1.dtype, device=x1.device)
    if x1.dim() < 2 or shapes.size(0) != x1.size(0):
        raise ValueError(
            f'DistancePointBBoxCoder.decode: {shapes.size(0)} per-image '
            'max_shapes need inputs with a leading batch dim of that size, '
            f'got boxes of shape {tuple(x1.shape) + (4, )}')
    view = (-1, ) + (1, ) * (x1.dim() - 1)
    h = shapes[:, 0].reshape(view)
    w = shapes[:, 1].reshape(view)
    zero = x1.new_zeros(())
    return (torch.minimum(torch.maximum(x1, zero), w),
            torch.minimum(torch.maximum(y1, zero), h),
            torch.minimum(torch.maximum(x2, zero), w),
            torch.minimum(torch.maximum(y2, zero), h))
