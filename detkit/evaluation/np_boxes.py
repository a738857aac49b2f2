"""numpy glue for the metrics: tensors to arrays, box IoU and areas.

Metrics receive tensors (possibly on a GPU) and work in float64 numpy; the
IoU itself is detkit's ``bbox_overlaps`` so that there is one definition.
"""
import numpy as np
import torch

from detkit.structures import bbox_overlaps


def as_numpy(value, shape=None):
    """``value`` (tensor, array or list) as a numpy array, optionally
    reshaped (``(-1, 4)`` keeps an empty box list two-dimensional)."""
    if hasattr(value, 'detach'):
        value = value.detach().cpu().numpy()
    value = np.asarray(value)
    return value if shape is None else value.reshape(shape)


def box_iou_np(boxes1, boxes2, use_legacy_coordinate=False):
    """IoU matrix ``(N, M)`` of xyxy boxes given as numpy arrays.

    ``use_legacy_coordinate`` counts pixels inclusively (a box ``[0, 0, 9,
    9]`` is 10 pixels wide), the Pascal VOC devkit convention that
    mmdetection's VOC evaluation keeps: widths and heights get ``+1``.
    """
    b1 = torch.as_tensor(np.asarray(boxes1, dtype=np.float64).reshape(-1, 4))
    b2 = torch.as_tensor(np.asarray(boxes2, dtype=np.float64).reshape(-1, 4))
    if use_legacy_coordinate:
        # +1 on x2, y2 of both sets turns every width/height into w+1/h+1,
        # overlaps included.
        shift = torch.tensor([0., 0., 1., 1.], dtype=torch.float64)
        b1, b2 = b1 + shift, b2 + shift
    return bbox_overlaps(b1, b2).numpy()


def box_areas_np(boxes, use_legacy_coordinate=False):
    """Areas ``(N,)`` of xyxy numpy boxes (``+1`` with legacy coordinates)."""
    boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    extra = 1. if use_legacy_coordinate else 0.
    return ((boxes[:, 2] - boxes[:, 0] + extra) *
            (boxes[:, 3] - boxes[:, 1] + extra))
