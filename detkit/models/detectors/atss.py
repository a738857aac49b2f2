"""ATSS (Zhang et al., Bridging the Gap Between Anchor-based and
Anchor-free Detection via Adaptive Training Sample Selection, 2020;
docs/atss.md)."""
from ...registry import MODELS
from .single_stage import SingleStageDetector


@MODELS.register_module()
class ATSS(SingleStageDetector):
    """ResNet-FPN features and an :class:`ATSSHead` (one anchor per
    location, adaptive positives, centerness); everything else is
    :class:`SingleStageDetector`."""
