"""Models: importing this registers every model component in ``MODELS`` /
``TASK_UTILS``."""
from . import (backbones, data_preprocessors, dense_heads, detectors, layers,
               losses, necks, roi_heads, task_modules)

__all__ = [
    'backbones', 'data_preprocessors', 'dense_heads', 'detectors', 'layers',
    'losses', 'necks', 'roi_heads', 'task_modules'
]
