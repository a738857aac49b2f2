"""Test-time augmentation: merge a detector's predictions over the views
that ``TestTimeAug`` makes of each image."""
from .det_tta import DetTTAModel, merge_aug_bboxes
from .tta_config import default_flip_tta_pipeline, enable_tta

__all__ = [
    'DetTTAModel', 'merge_aug_bboxes', 'enable_tta',
    'default_flip_tta_pipeline'
]
