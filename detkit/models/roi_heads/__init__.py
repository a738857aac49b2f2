"""RoI heads of two-stage detectors."""
from . import bbox_heads, roi_extractors

__all__ = ['bbox_heads', 'roi_extractors']
