"""Data structures: the per-image record and box operations."""
from .bbox import (bbox2roi, bbox_areas, bbox_clip, bbox_cxcywh_to_xyxy,
                   bbox_flip, bbox_overlaps, bbox_rescale, bbox_xyxy_to_cxcywh,
                   empty_box_as)
from .det_data_sample import DetDataSample, SampleList

__all__ = [
    'DetDataSample', 'SampleList', 'bbox_overlaps', 'bbox_xyxy_to_cxcywh',
    'bbox_cxcywh_to_xyxy', 'bbox_clip', 'bbox_flip', 'bbox_rescale',
    'bbox_areas', 'bbox2roi', 'empty_box_as'
]
