"""detkit's hooks (registered in ``detkit.registry.HOOKS``)."""
from .broken_image_report_hook import BrokenImageReportHook
from .checkpoint_hook import DetCheckpointHook

__all__ = ['BrokenImageReportHook', 'DetCheckpointHook']
