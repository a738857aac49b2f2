"""RoI heads of two-stage detectors."""
from . import bbox_heads, roi_extractors, shared_heads
from .standard_roi_head import StandardRoIHead

__all__ = ['bbox_heads', 'roi_extractors', 'shared_heads', 'StandardRoIHead']
