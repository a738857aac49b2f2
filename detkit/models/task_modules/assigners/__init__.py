"""Assigners and overlap calculators, registered in ``TASK_UTILS``."""
from .assign_result import AssignResult
from .atss_assigner import ATSSAssigner
from .iou2d_calculator import BboxOverlaps2D
from .max_iou_assigner import MaxIoUAssigner

__all__ = ['AssignResult', 'ATSSAssigner', 'BboxOverlaps2D', 'MaxIoUAssigner']
