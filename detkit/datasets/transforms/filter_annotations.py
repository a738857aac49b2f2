"""Drop ground-truth boxes that became too small (after a crop, say)."""
from typing import Tuple, Union

import numpy as np

from detkit.registry import TRANSFORMS
from .base import BaseTransform, require_keys
from .transforms import _keep_instances


@TRANSFORMS.register_module()
class FilterAnnotations(BaseTransform):
    """Keep the boxes wider than ``min_gt_bbox_wh[0]`` and taller than
    ``min_gt_bbox_wh[1]`` (strictly), with their labels and ignore flags.

    Args:
        min_gt_bbox_wh: ``(min_w, min_h)`` in pixels.
        min_gt_mask_area: the mask-area bound of ``by_mask``; unused, since
            detkit has no instance masks.
        by_box: filter by box size (must be True: it is the only test).
        by_mask: filter by mask area; not available (no masks).
        keep_empty: mmdetection's name for "drop the sample when no box is
            left": True returns None (a training dataset then fetches
            another index), False returns the sample with no boxes.

    A sample that arrives without boxes passes unchanged.
    """

    def __init__(self,
                 min_gt_bbox_wh: Tuple[Union[int, float],
                                       Union[int, float]] = (1, 1),
                 min_gt_mask_area: int = 1,
                 by_box: bool = True,
                 by_mask: bool = False,
                 keep_empty: bool = True):
        if by_mask:
            raise NotImplementedError(
                'FilterAnnotations: by_mask=True filters instance masks, '
                'which detkit does not load; use by_box=True, by_mask=False')
        if not by_box:
            raise ValueError('FilterAnnotations: by_box=False and '
                             'by_mask=False would test nothing; set '
                             'by_box=True')
        if len(min_gt_bbox_wh) != 2:
            raise ValueError('FilterAnnotations: min_gt_bbox_wh must be '
                             f'(min_w, min_h), got {min_gt_bbox_wh!r}')
        self.min_gt_bbox_wh = tuple(min_gt_bbox_wh)
        self.min_gt_mask_area = min_gt_mask_area
        self.by_box = by_box
        self.by_mask = by_mask
        self.keep_empty = keep_empty

    def transform(self, results: dict):
        require_keys(results, ['gt_bboxes'], 'FilterAnnotations')
        boxes = np.asarray(results['gt_bboxes']).reshape(-1, 4)
        if boxes.shape[0] == 0:
            return results
        keep = ((boxes[:, 2] - boxes[:, 0] > self.min_gt_bbox_wh[0]) &
                (boxes[:, 3] - boxes[:, 1] > self.min_gt_bbox_wh[1]))
        if not keep.any() and self.keep_empty:
            return None
        _keep_instances(results, keep)
        return results
