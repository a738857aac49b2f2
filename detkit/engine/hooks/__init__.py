"""detkit's hooks (registered in ``detkit.registry.HOOKS``)."""
from .broken_image_report_hook import BrokenImageReportHook
from .check_invalid_loss_hook import CheckInvalidLossHook
from .checkpoint_hook import DetCheckpointHook
from .num_class_check_hook import NumClassCheckHook, check_num_classes
from .report_hook import ReportHook

__all__ = [
    'BrokenImageReportHook', 'DetCheckpointHook', 'NumClassCheckHook',
    'check_num_classes', 'ReportHook', 'CheckInvalidLossHook'
]
