"""Prior (anchor) generators, registered in ``TASK_UTILS``."""
from .anchor_generator import AnchorGenerator
from .ssd_anchor_generator import SSDAnchorGenerator, ssd_base_sizes

__all__ = ['AnchorGenerator', 'SSDAnchorGenerator', 'ssd_base_sizes']
