"""Faster R-CNN (Ren et al., 2015) with FPN (Lin et al., 2017)."""
from ...registry import MODELS
from .two_stage import TwoStageDetector


@MODELS.register_module()
class FasterRCNN(TwoStageDetector):
    """An RPN and a :class:`StandardRoIHead`; everything is
    :class:`TwoStageDetector`."""
