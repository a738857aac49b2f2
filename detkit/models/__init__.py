"""Models: importing this registers every model component in ``MODELS`` /
``TASK_UTILS``."""
from . import (backbones, data_preprocessors, dense_heads, detectors, layers,
               losses, necks, roi_heads, task_modules)
from . import test_time_augs  # noqa: F401,E402

__all__ = [
    'backbones', 'data_preprocessors', 'dense_heads', 'detectors', 'layers',
    'losses', 'necks', 'roi_heads', 'task_modules'
]
