"""RoI heads of two-stage detectors."""
from . import bbox_heads, roi_extractors
from .standard_roi_head import StandardRoIHead

__all__ = ['bbox_heads', 'roi_extractors', 'StandardRoIHead']
