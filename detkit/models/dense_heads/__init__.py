"""Dense heads: per-location classification and box regression."""
from .anchor_head import AnchorHead
from .atss_head import ATSSHead
from .base_dense_head import BaseDenseHead
from .fcos_head import FCOSHead
from .retina_head import RetinaHead
from .rpn_head import RPNHead
from .ssd_head import SSDHead

__all__ = [
    'BaseDenseHead', 'AnchorHead', 'RetinaHead', 'RPNHead', 'SSDHead',
    'FCOSHead', 'ATSSHead'
]
