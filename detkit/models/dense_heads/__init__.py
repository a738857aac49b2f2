"""Dense heads: per-location classification and box regression."""
from .anchor_head import AnchorHead
from .base_dense_head import BaseDenseHead
from .retina_head import RetinaHead

__all__ = ['BaseDenseHead', 'AnchorHead', 'RetinaHead']
