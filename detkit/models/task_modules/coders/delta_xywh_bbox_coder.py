"""Box <-> delta coding of Faster R-CNN (docs/box_coders.md).

A prior ``p`` and a box ``g`` (both ``(x1, y1, x2, y2)`` pixels, width
``x2 - x1``) give the deltas

    dx = (gx - px) / pw    dy = (gy - py) / ph
    dw = log(gw / pw)      dh = log(gh / ph)

of centres and sizes, normalised as ``(d - mean) / std``. Decoding inverts
this with ``dw, dh`` clamped to ``±|log(wh_ratio_clip)|`` (4.1351666 for
the default 16/1000) and, given ``max_shape = (h, w)``, clips x to
``[0, w]`` and y to ``[0, h]``. Everything is float32 in mmdetection's
operation order, so results match it bit for bit.
"""
import math
from typing import Optional, Sequence, Union

import numpy as np
import torch
from torch import Tensor

from ....registry import TASK_UTILS


@TASK_UTILS.register_module()
class DeltaXYWHBBoxCoder:
    """Delta (dx, dy, dw, dh) box coder.

    Args:
        target_means, target_stds: delta normalisation.
        clip_border: clip decoded boxes to ``max_shape`` when one is given.
        add_ctr_clamp: clamp the centre shift ``pw * dx`` to
            ``±ctr_clamp`` pixels (and ``dw, dh`` only from above).
        ctr_clamp: the centre-shift bound in pixels.
    """

    encode_size = 4

    def __init__(self,
                 target_means: Sequence[float] = (0., 0., 0., 0.),
                 target_stds: Sequence[float] = (1., 1., 1., 1.),
                 clip_border: bool = True,
                 add_ctr_clamp: bool = False,
                 ctr_clamp: int = 32):
        if len(target_means) != 4 or len(target_stds) != 4:
            raise ValueError('DeltaXYWHBBoxCoder: target_means and '
                             'target_stds need 4 values each, got '
                             f'{target_means!r} and {target_stds!r}')
        self.means = tuple(float(m) for m in target_means)
        self.stds = tuple(float(s) for s in target_stds)
        self.clip_border = clip_border
        self.add_ctr_clamp = add_ctr_clamp
        self.ctr_clamp = ctr_clamp

    def encode(self, bboxes: Tensor, gt_bboxes: Tensor) -> Tensor:
        """Deltas ``(..., 4)`` that turn ``bboxes (..., 4)`` into
        ``gt_bboxes (..., 4)`` (same shape)."""
        if bboxes.shape != gt_bboxes.shape or bboxes.size(-1) != 4:
            raise ValueError(
                'DeltaXYWHBBoxCoder.encode: bboxes and gt_bboxes must both '
                f'be (..., 4) of one shape, got {tuple(bboxes.shape)} and '
                f'{tuple(gt_bboxes.shape)}')
        p, g = bboxes.float(), gt_bboxes.float()
        px = (p[..., 0] + p[..., 2]) * 0.5
        py = (p[..., 1] + p[..., 3]) * 0.5
        pw = p[..., 2] - p[..., 0]
        ph = p[..., 3] - p[..., 1]
        gx = (g[..., 0] + g[..., 2]) * 0.5
        gy = (g[..., 1] + g[..., 3]) * 0.5
        gw = g[..., 2] - g[..., 0]
        gh = g[..., 3] - g[..., 1]
        deltas = torch.stack([(gx - px) / pw, (gy - py) / ph,
                              torch.log(gw / pw),
                              torch.log(gh / ph)], -1)
        means = deltas.new_tensor(self.means)
        stds = deltas.new_tensor(self.stds)
        return (deltas - means) / stds

    def decode(self,
               bboxes: Tensor,
               pred_bboxes: Tensor,
               max_shape: Optional[Union[Sequence, Tensor]] = None,
               wh_ratio_clip: float = 16 / 1000) -> Tensor:
        """Apply deltas to priors.

        Args:
            bboxes: priors ``(..., 4)``.
            pred_bboxes: deltas ``(..., 4)``, or class-specific
                ``(..., 4 * K)`` decoded block by block against the same
                prior; leading dims broadcast with ``bboxes``'.
            max_shape: ``(h, w)`` for all boxes, or one ``(h, w)`` per image
                (a sequence or a ``(B, 2)`` tensor) when the inputs have a
                leading batch dim ``B``.
            wh_ratio_clip: bound on the size change, ``exp(±|log(r)|)``.

        Returns:
            Boxes shaped like ``pred_bboxes``.
        """
        if pred_bboxes.size(-1) % 4 != 0 or bboxes.size(-1) != 4:
            raise ValueError(
                'DeltaXYWHBBoxCoder.decode: bboxes must be (..., 4) and '
                f'pred_bboxes (..., 4K), got {tuple(bboxes.shape)} and '
                f'{tuple(pred_bboxes.shape)}')
        if pred_bboxes.numel() == 0:
            return pred_bboxes
        out_shape = pred_bboxes.shape
        deltas = pred_bboxes.reshape(*out_shape[:-1], -1, 4)
        means = deltas.new_tensor(self.means)
        stds = deltas.new_tensor(self.stds)
        deltas = deltas * stds + means
        dxy, dwh = deltas[..., :2], deltas[..., 2:]

        rois = bboxes[..., None, :]  # one prior for the K class blocks
        pxy = (rois[..., :2] + rois[..., 2:]) * 0.5
        pwh = rois[..., 2:] - rois[..., :2]
        dxy_wh = pwh * dxy
        max_ratio = abs(math.log(wh_ratio_clip))
        if self.add_ctr_clamp:
            dxy_wh = dxy_wh.clamp(min=-self.ctr_clamp, max=self.ctr_clamp)
            dwh = dwh.clamp(max=max_ratio)
        else:
            dwh = dwh.clamp(min=-max_ratio, max=max_ratio)
        gxy = pxy + dxy_wh
        gwh = pwh * dwh.exp()
        boxes = torch.cat([gxy - gwh * 0.5, gxy + gwh * 0.5], -1)
        if self.clip_border and max_shape is not None:
            boxes = _clip(boxes, max_shape)
        return boxes.reshape(out_shape)

    def __repr__(self) -> str:
        return (f'DeltaXYWHBBoxCoder(target_means={self.means}, '
                f'target_stds={self.stds}, clip_border={self.clip_border}, '
                f'add_ctr_clamp={self.add_ctr_clamp})')


def _is_per_image(max_shape) -> bool:
    if isinstance(max_shape, (Tensor, np.ndarray)):
        return max_shape.ndim == 2
    return len(max_shape) > 0 and isinstance(
        max_shape[0], (Sequence, Tensor, np.ndarray))


def _clip(boxes: Tensor, max_shape) -> Tensor:
    """Clip ``boxes (..., K, 4)`` to ``max_shape``: one ``(h, w[, c])`` or
    one per image along the leading dim. Out of place, so gradients flow
    (decoded boxes feed IoU losses)."""
    x, y = boxes[..., 0::2], boxes[..., 1::2]
    if not _is_per_image(max_shape):
        h, w = float(max_shape[0]), float(max_shape[1])
        x, y = x.clamp(min=0, max=w), y.clamp(min=0, max=h)
    else:
        shapes = torch.as_tensor(
            np.asarray([[float(s[0]), float(s[1])] for s in max_shape]),
            dtype=boxes.dtype,
            device=boxes.device)
        if boxes.dim() < 3 or shapes.size(0) != boxes.size(0):
            raise ValueError(
                f'DeltaXYWHBBoxCoder.decode: {shapes.size(0)} per-image '
                'max_shapes need inputs with a leading batch dim of that '
                f'size, got boxes of shape {tuple(boxes.shape[:-2])} + (4K,)')
        view = (-1, ) + (1, ) * (boxes.dim() - 1)
        h = shapes[:, 0].reshape(view)
        w = shapes[:, 1].reshape(view)
        zero = boxes.new_zeros(())
        x = torch.minimum(torch.maximum(x, zero), w)
        y = torch.minimum(torch.maximum(y, zero), h)
    return torch.stack([x[..., 0], y[..., 0], x[..., 1], y[..., 1]], -1)
