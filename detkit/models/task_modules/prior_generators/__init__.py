"""Prior generators (anchors, points), registered in ``TASK_UTILS``."""
from .anchor_generator import AnchorGenerator
from .point_generator import MlvlPointGenerator
from .ssd_anchor_generator import SSDAnchorGenerator, ssd_base_sizes

__all__ = [
    'AnchorGenerator', 'MlvlPointGenerator', 'SSDAnchorGenerator',
    'ssd_base_sizes'
]
