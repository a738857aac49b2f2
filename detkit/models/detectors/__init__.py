"""Detectors: how backbone, neck and heads are wired together."""
from .base import BaseDetector, NonFiniteLossError
from .retinanet import RetinaNet
from .single_stage import SingleStageDetector

__all__ = [
    'BaseDetector', 'NonFiniteLossError', 'SingleStageDetector', 'RetinaNet'
]
