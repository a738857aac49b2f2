"""RetinaNet (Lin et al., Focal Loss for Dense Object Detection)."""
from ...registry import MODELS
from .single_stage import SingleStageDetector


@MODELS.register_module()
class RetinaNet(SingleStageDetector):
    """ResNet-FPN features and a :class:`RetinaHead` trained with focal
    loss; everything else is :class:`SingleStageDetector`."""
