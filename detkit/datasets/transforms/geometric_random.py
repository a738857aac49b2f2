"""Random scale and random crop: the multi-scale (``ms-3x``) and
large-scale-jitter (``lsj``) training augmentations.

Both keep ``gt_bboxes`` (float32 ``(N, 4)`` x1y1x2y2 pixels),
``gt_bboxes_labels`` and ``gt_ignore_flags`` aligned with each other and
with ``img``/``img_shape``. Randomness comes from NumPy's global
generator (which detkit's seeded data loading reseeds for every sample, so
a resumed run draws the same), in mmdetection 3.3's order: a seeded run
makes the same choices. See ``docs/data_pipeline.md``.
"""
from typing import Optional, Sequence, Tuple, Union

import numpy as np

from detkit.registry import TRANSFORMS
from .base import BaseTransform, require_keys
from .transforms import _keep_instances, clip_boxes


def _is_pair(value) -> bool:
    return (isinstance(value, (tuple, list)) and len(value) == 2
            and all(isinstance(v, (int, float)) and not isinstance(v, bool)
                    for v in value))


@TRANSFORMS.register_module()
class RandomResize(BaseTransform):
    """Resize to a scale drawn at random, then apply ``resize_type``.

    Args:
        scale: either one ``(w, h)`` pair, multiplied by a ratio drawn
            uniformly from ``ratio_range`` (``np.random.random_sample() *
            (max - min) + min``; the scale becomes ``(int(w * r), int(h *
            r))``), or two pairs ``[(a0, b0), (a1, b1)]``, from which the
            first edge is drawn from the integers ``[min(a0, a1), max(a0,
            a1)]`` and then the second from ``[min(b0, b1), max(b0, b1)]``
            (``np.random.randint``, bounds included; ``ratio_range`` is not
            used). ``[(1333, 640), (1333, 800)]`` gives ``(1333, s)`` with
            ``s`` in 640..800: with ``keep_ratio`` the long edge at most
            1333 and the short edge at most ``s``.
        ratio_range: ``(min, max)`` of the ratio, needed with one pair.
        resize_type: the resize transform (``'Resize'``).
        **resize_kwargs: its other arguments (``keep_ratio``,
            ``clip_object_border``, ``interpolation``, ...).

    Sets ``scale`` to the drawn ``(w, h)`` and whatever the resize sets
    (``img_shape``, ``scale_factor``, ...).
    """

    def __init__(self,
                 scale: Union[Tuple[int, int], Sequence[Tuple[int, int]]],
                 ratio_range: Optional[Tuple[float, float]] = None,
                 resize_type: str = 'Resize',
                 **resize_kwargs):
        if _is_pair(scale):
            if ratio_range is None or len(ratio_range) != 2 or \
                    ratio_range[0] > ratio_range[1]:
                raise ValueError(
                    f'RandomResize: scale={scale!r} is one (w, h) pair, so '
                    'ratio_range=(min, max) with min <= max is needed; '
                    f'got ratio_range={ratio_range!r}. For a range of '
                    'scales give two pairs, e.g. scale=[(1333, 640), (1333, '
                    '800)].')
            self.scale = tuple(scale)
        elif (isinstance(scale, (tuple, list)) and len(scale) == 2
              and all(_is_pair(s) for s in scale)):
            self.scale = [tuple(s) for s in scale]
        else:
            raise ValueError(
                f'RandomResize: scale must be a (w, h) pair with ratio_range '
                f'or two (w, h) pairs, got {scale!r}')
        self.ratio_range = None if ratio_range is None else tuple(
            ratio_range)
        self.resize_type = resize_type
        self.resize_kwargs = resize_kwargs
        # The scale is set before every call; 0 is a placeholder.
        self._resize = TRANSFORMS.build(
            dict(type=resize_type, scale=0, **resize_kwargs))

    def _random_scale(self) -> Tuple[int, int]:
        if isinstance(self.scale, tuple):
            low, high = self.ratio_range
            ratio = np.random.random_sample() * (high - low) + low
            return int(self.scale[0] * ratio), int(self.scale[1] * ratio)
        (a0, b0), (a1, b1) = self.scale
        edge0 = np.random.randint(min(a0, a1), max(a0, a1) + 1)
        edge1 = np.random.randint(min(b0, b1), max(b0, b1) + 1)
        return int(edge0), int(edge1)

    def transform(self, results: dict) -> dict:
        self._resize.scale = self._random_scale()
        return self._resize(results)


_CROP_TYPES = ('absolute', 'absolute_range', 'relative', 'relative_range')


@TRANSFORMS.register_module()
class RandomCrop(BaseTransform):
    """Crop a random window; boxes follow, and boxes left outside go.

    Args:
        crop_size: with ``crop_type``:

            - ``'absolute'``: ``(w, h)`` pixels; the window is ``(min(h,
              img_h), min(w, img_w))``;
            - ``'absolute_range'``: ``(min, max)`` pixels; the window's
              height is drawn from the integers ``[min(img_h, min),
              min(img_h, max)]``, then its width likewise from ``img_w``;
            - ``'relative'``: ``(rw, rh)`` in ``(0, 1]``; the window is
              ``(int(img_h * rh + 0.5), int(img_w * rw + 0.5))``;
            - ``'relative_range'``: ``(rh_min, rw_min)`` in ``(0, 1]`` (note
              the order: height first, as mmdetection reads it); ``rh, rw =
              crop_size + np.random.rand(2) * (1 - crop_size)``, then as
              ``'relative'``.
        allow_negative_crop: keep a window without any box (with no boxes
            left); otherwise the transform returns None and a training
            dataset fetches another index.
        recompute_bbox: recompute boxes from cropped instance masks; detkit
            has no masks, so this has no effect (accepted for configs).
        bbox_clip_border: clip boxes to the window.

    The window's corner is ``(np.random.randint(0, img_h - crop_h + 1),
    np.random.randint(0, img_w - crop_w + 1))`` (top first). Boxes move by
    ``-(left, top)``, are clipped (``bbox_clip_border``), and a box is kept
    when it still reaches into the window: ``x1 < crop_w``, ``y1 <
    crop_h``, ``x2 > 0``, ``y2 > 0``. Labels and ignore flags are kept with
    their boxes. A sample without ``gt_bboxes`` is cropped and never None.
    """

    def __init__(self,
                 crop_size: Tuple[Union[int, float], Union[int, float]],
                 crop_type: str = 'absolute',
                 allow_negative_crop: bool = False,
                 recompute_bbox: bool = False,
                 bbox_clip_border: bool = True):
        if crop_type not in _CROP_TYPES:
            raise ValueError(f'RandomCrop: crop_type must be one of '
                             f'{_CROP_TYPES}, got {crop_type!r}')
        if not _is_pair(crop_size):
            raise ValueError(f'RandomCrop: crop_size must be a pair, got '
                             f'{crop_size!r}')
        if crop_type.startswith('absolute'):
            if not all(isinstance(s, int) and s > 0 for s in crop_size):
                raise ValueError(
                    f"RandomCrop: crop_type={crop_type!r} needs crop_size of "
                    f'two positive ints (pixels), got {crop_size!r}')
            if crop_type == 'absolute_range' and crop_size[0] > crop_size[1]:
                raise ValueError(
                    "RandomCrop: crop_type='absolute_range' needs crop_size "
                    f'= (min, max) with min <= max, got {crop_size!r}')
        elif not all(0 < s <= 1 for s in crop_size):
            raise ValueError(
                f'RandomCrop: crop_type={crop_type!r} needs crop_size '
                f'ratios in (0, 1], got {crop_size!r}')
        self.crop_size = tuple(crop_size)
        self.crop_type = crop_type
        self.allow_negative_crop = allow_negative_crop
        self.recompute_bbox = recompute_bbox
        self.bbox_clip_border = bbox_clip_border

    def _crop_hw(self, h: int, w: int) -> Tuple[int, int]:
        """The window's ``(crop_h, crop_w)`` for an ``h x w`` image."""
        size = self.crop_size
        if self.crop_type == 'absolute':
            return min(size[1], h), min(size[0], w)
        if self.crop_type == 'absolute_range':
            crop_h = np.random.randint(min(h, size[0]), min(h, size[1]) + 1)
            crop_w = np.random.randint(min(w, size[0]), min(w, size[1]) + 1)
            return int(crop_h), int(crop_w)
        if self.crop_type == 'relative':
            rel_w, rel_h = size
        else:
            low = np.asarray(size, dtype=np.float32)
            rel_h, rel_w = low + np.random.rand(2) * (1 - low)
        return int(h * rel_h + 0.5), int(w * rel_w + 0.5)

    def transform(self, results: dict) -> Optional[dict]:
        require_keys(results, ['img'], 'RandomCrop')
        img = results['img']
        h, w = img.shape[:2]
        crop_h, crop_w = self._crop_hw(h, w)
        if crop_h < 1 or crop_w < 1:
            raise ValueError(
                f'RandomCrop: crop_size={self.crop_size} '
                f'({self.crop_type}) gives an empty {crop_h}x{crop_w} window '
                f'on a {h}x{w} image; use larger ratios.')
        top = int(np.random.randint(0, max(h - crop_h, 0) + 1))
        left = int(np.random.randint(0, max(w - crop_w, 0) + 1))
        img = img[top:top + crop_h, left:left + crop_w, ...]
        crop_shape = img.shape[:2]
        if results.get('gt_bboxes') is not None:
            shift = np.array([left, top, left, top], dtype=np.float32)
            boxes = np.asarray(results['gt_bboxes'],
                               dtype=np.float32).reshape(-1, 4) - shift
            if self.bbox_clip_border:
                boxes = clip_boxes(boxes, crop_shape)
            inside = ((boxes[:, 0] < crop_shape[1]) &
                      (boxes[:, 1] < crop_shape[0]) & (boxes[:, 2] > 0) &
                      (boxes[:, 3] > 0))
            if not inside.any() and not self.allow_negative_crop:
                return None
            results['gt_bboxes'] = boxes
            _keep_instances(results, inside)
        results['img'] = img
        results['img_shape'] = crop_shape
        if results.get('gt_seg_map') is not None:
            results['gt_seg_map'] = results['gt_seg_map'][top:top + crop_h,
                                                          left:left + crop_w]
        return results
