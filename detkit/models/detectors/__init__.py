"""Detectors: how backbone, neck and heads are wired together."""
from .atss import ATSS
from .base import BaseDetector, NonFiniteLossError
from .faster_rcnn import FasterRCNN
from .fcos import FCOS
from .retinanet import RetinaNet
from .rpn import RPN
from .single_stage import SingleStageDetector
from .ssd import SSD
from .two_stage import TwoStageDetector

__all__ = [
    'BaseDetector', 'NonFiniteLossError', 'SingleStageDetector', 'RetinaNet',
    'SSD', 'RPN', 'TwoStageDetector', 'FasterRCNN', 'FCOS', 'ATSS'
]
