"""SSD (Liu et al., SSD: Single Shot MultiBox Detector) and SSDLite
(Sandler et al., MobileNetV2, §6.2)."""
from ...registry import MODELS
from .single_stage import SingleStageDetector


@MODELS.register_module()
class SSD(SingleStageDetector):
    """VGG16 (SSD300/512) or MobileNetV2 (SSDLite) features, an
    :class:`SSDNeck` of extra levels and an :class:`SSDHead` trained with
    hard-negative mining; everything else is :class:`SingleStageDetector`.

    mmdetection's SSD configs say ``type='SingleStageDetector'``; both
    names build the same model with the same state_dict.
    """
