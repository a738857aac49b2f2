"""Data transforms; importing this registers them in ``TRANSFORMS``.

Keys of the results dict that travels through a pipeline:

- from the dataset: ``img_path``, ``img_id``, ``width``, ``height``,
  ``instances`` (list of ``dict(bbox=[x1, y1, x2, y2], bbox_label=int,
  ignore_flag=0/1)``), ``sample_idx``;
- ``LoadImageFromFile``: ``img`` (``(H, W, 3)`` BGR uint8), ``ori_shape``
  and ``img_shape`` (``(h, w)``);
- ``LoadAnnotations``: ``gt_bboxes`` (float32 ``(N, 4)`` x1y1x2y2 pixels),
  ``gt_bboxes_labels`` (int64 ``(N,)``), ``gt_ignore_flags`` (bool ``(N,)``);
- ``Resize``: ``scale``, ``scale_factor`` (``(w_scale, h_scale)``),
  ``keep_ratio`` (``RandomResize`` and ``RandomChoiceResize`` too);
  ``RandomFlip``: ``flip``, ``flip_direction``; ``Pad``: ``pad_shape``;
  ``RandomCrop`` and ``FilterAnnotations`` drop boxes (with their labels
  and ignore flags) and may return None (the sample is skipped);
- ``PackDetInputs``: ``dict(inputs=(C, H, W) tensor,
  data_samples=DetDataSample)``.
"""
from .base import BaseTransform
from .filter_annotations import FilterAnnotations
from .formatting import PackDetInputs
from .geometric_random import RandomCrop, RandomResize
from .loading import (BrokenImageError, LoadAnnotations, LoadImageFromFile,
                      LoadImageFromNDArray)
from .photometric import PhotoMetricDistortion
from .test_time_aug import TestTimeAug  # noqa: F401
from .transforms import (Expand, MinIoURandomCrop, Pad, RandomChoiceResize,
                         RandomFlip, Resize)

__all__ = [
    'BaseTransform', 'BrokenImageError', 'LoadImageFromFile',
    'LoadImageFromNDArray',
    'LoadAnnotations', 'Resize', 'RandomChoiceResize', 'RandomFlip', 'Pad',
    'Expand', 'MinIoURandomCrop', 'PhotoMetricDistortion', 'PackDetInputs',
    'RandomResize', 'RandomCrop', 'FilterAnnotations'
]
