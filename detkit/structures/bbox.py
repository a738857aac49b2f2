"""Box operations on plain float tensors ``(..., 4)`` in x1, y1, x2, y2 pixels.

Widths and heights are ``x2 - x1`` and ``y2 - y1`` (no +1), as in
mmdetection 3.x. Every function accepts leading batch dimensions.
"""
import torch
from torch import Tensor


def bbox_overlaps(bboxes1: Tensor,
                  bboxes2: Tensor,
                  mode: str = 'iou',
                  is_aligned: bool = False,
                  eps: float = 1e-6) -> Tensor:
    """IoU or IoF between two sets of boxes.

    Args:
        bboxes1: ``(..., N, 4)``.
        bboxes2: ``(..., M, 4)``; with ``is_aligned`` ``M == N``.
        mode: ``'iou'`` (intersection over union) or ``'iof'``
            (intersection over the area of ``bboxes1``).
        is_aligned: pairwise row by row instead of the full matrix.
        eps: lower bound of the denominator.

    Returns:
        ``(..., N, M)``, or ``(..., N)`` when aligned.
    """
    if mode not in ('iou', 'iof'):
        raise ValueError(f"bbox_overlaps: mode must be 'iou' or 'iof', "
                         f'got {mode!r}')
    if bboxes1.shape[-1] != 4 or bboxes2.shape[-1] != 4:
        raise ValueError('bbox_overlaps expects boxes of shape (..., 4), got '
                         f'{tuple(bboxes1.shape)} and {tuple(bboxes2.shape)}')
    area1 = (bboxes1[..., 2] - bboxes1[..., 0]) * (
        bboxes1[..., 3] - bboxes1[..., 1])
    area2 = (bboxes2[..., 2] - bboxes2[..., 0]) * (
        bboxes2[..., 3] - bboxes2[..., 1])
    if is_aligned:
        lt = torch.max(bboxes1[..., :2], bboxes2[..., :2])
        rb = torch.min(bboxes1[..., 2:], bboxes2[..., 2:])
        wh = (rb - lt).clamp(min=0)
        overlap = wh[..., 0] * wh[..., 1]
        union = area1 + area2 - overlap if mode == 'iou' else area1
    else:
        lt = torch.max(bboxes1[..., :, None, :2], bboxes2[..., None, :, :2])
        rb = torch.min(bboxes1[..., :, None, 2:], bboxes2[..., None, :, 2:])
        wh = (rb - lt).clamp(min=0)
        overlap = wh[..., 0] * wh[..., 1]
        if mode == 'iou':
            union = area1[..., None] + area2[..., None, :] - overlap
        else:
            union = area1[..., None].expand_as(overlap)
    union = union.clamp(min=eps)
    return overlap / union


def bbox_xyxy_to_cxcywh(bboxes: Tensor) -> Tensor:
    """``(x1, y1, x2, y2)`` -> ``(cx, cy, w, h)``."""
    x1, y1, x2, y2 = bboxes.unbind(-1)
    return torch.stack(((x1 + x2) / 2, (y1 + y2) / 2, x2 - x1, y2 - y1), -1)


def bbox_cxcywh_to_xyxy(bboxes: Tensor) -> Tensor:
    """``(cx, cy, w, h)`` -> ``(x1, y1, x2, y2)``."""
    cx, cy, w, h = bboxes.unbind(-1)
    return torch.stack((cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2), -1)


def bbox_clip(bboxes: Tensor, img_shape) -> Tensor:
    """Clip x to ``[0, w]`` and y to ``[0, h]``; ``img_shape = (h, w)``."""
    h, w = img_shape[:2]
    x = bboxes[..., 0::2].clamp(0, w)
    y = bboxes[..., 1::2].clamp(0, h)
    return torch.stack((x[..., 0], y[..., 0], x[..., 1], y[..., 1]), -1)


def bbox_flip(bboxes: Tensor, img_shape, direction: str = 'horizontal'):
    """Mirror boxes inside an image of ``img_shape = (h, w)``.

    ``direction`` is ``'horizontal'`` (x' = w - x), ``'vertical'``
    (y' = h - y) or ``'diagonal'`` (both).
    """
    h, w = img_shape[:2]
    x1, y1, x2, y2 = bboxes.unbind(-1)
    if direction == 'horizontal':
        out = (w - x2, y1, w - x1, y2)
    elif direction == 'vertical':
        out = (x1, h - y2, x2, h - y1)
    elif direction == 'diagonal':
        out = (w - x2, h - y2, w - x1, h - y1)
    else:
        raise ValueError("bbox_flip: direction must be 'horizontal', "
                         f"'vertical' or 'diagonal', got {direction!r}")
    return torch.stack(out, -1)


def bbox_rescale(bboxes: Tensor, scale_factor) -> Tensor:
    """Multiply x by ``scale_factor[0]`` and y by ``scale_factor[1]``.

    To map boxes of a resized image back to the original, pass the
    reciprocal ``(1 / w_scale, 1 / h_scale)`` (mmdetection multiplies by the
    float32 reciprocal rather than dividing).
    """
    sx, sy = float(scale_factor[0]), float(scale_factor[1])
    scale = bboxes.new_tensor([sx, sy, sx, sy])
    return bboxes * scale


def bbox_areas(bboxes: Tensor) -> Tensor:
    """``(x2 - x1) * (y2 - y1)``."""
    return (bboxes[..., 2] - bboxes[..., 0]) * (bboxes[..., 3] - bboxes[..., 1])


def bbox2roi(bbox_list) -> Tensor:
    """Concatenate per-image boxes into RoIs ``(R, 5)``:
    ``[batch_index, x1, y1, x2, y2]``."""
    rois = []
    for img_id, bboxes in enumerate(bbox_list):
        idx = bboxes.new_full((bboxes.size(0), 1), img_id)
        rois.append(torch.cat([idx, bboxes[:, :4]], dim=-1))
    return torch.cat(rois, 0)


def empty_box_as(tensor: Tensor) -> Tensor:
    """A ``(0, 4)`` float tensor on the device and dtype of ``tensor``."""
    return tensor.new_zeros((0, 4))
