"""FCOS (Tian et al., FCOS: Fully Convolutional One-Stage Object
Detection, 2019; docs/fcos.md)."""
from ...registry import MODELS
from .single_stage import SingleStageDetector


@MODELS.register_module()
class FCOS(SingleStageDetector):
    """ResNet-FPN features (P3-P7, P6 from P5's output) and an anchor-free
    :class:`FCOSHead`; everything else is :class:`SingleStageDetector`."""
