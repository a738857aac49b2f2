"""Geometric transforms: they move pixels and the boxes with them.

Every transform here keeps ``gt_bboxes`` (float32 ``(N, 4)`` x1y1x2y2
pixels of the *current* image), ``gt_bboxes_labels`` and
``gt_ignore_flags`` consistent with ``img`` and ``img_shape``. Randomness
comes from NumPy's global generator, drawn in the same order as
mmdetection 3.3 so that a seeded run makes the same choices.
"""
import math
from typing import List, Optional, Sequence, Tuple, Union

import cv2
import numpy as np
import torch

from detkit.registry import TRANSFORMS
from detkit.structures import bbox_flip, bbox_overlaps
from .base import BaseTransform, require_keys

_INTERPOLATION = {
    'nearest': cv2.INTER_NEAREST,
    'bilinear': cv2.INTER_LINEAR,
    'bicubic': cv2.INTER_CUBIC,
    'area': cv2.INTER_AREA,
    'lanczos': cv2.INTER_LANCZOS4,
}


def _scale_size(size: Tuple[int, int], scale) -> Tuple[int, int]:
    """``(w, h)`` times a factor (number or ``(sx, sy)``), rounded half up
    by truncation: ``int(w * s + 0.5)``."""
    sx, sy = (scale, scale) if isinstance(scale, (int, float)) else scale
    return int(size[0] * float(sx) + 0.5), int(size[1] * float(sy) + 0.5)


def rescale_size(w: int, h: int, scale) -> Tuple[int, int]:
    """The ``(new_w, new_h)`` of a keep-ratio resize.

    ``scale`` is a factor or a ``(long, short)`` pair in any order; the
    factor is then ``min(max(scale) / max(h, w), min(scale) / min(h, w))``:
    the largest that fits the long edge into ``max(scale)`` and the short
    edge into ``min(scale)``.
    """
    if isinstance(scale, (int, float)):
        if scale <= 0:
            raise ValueError(f'rescale factor must be positive, got {scale}')
        factor = scale
    else:
        factor = min(max(scale) / max(h, w), min(scale) / min(h, w))
    return _scale_size((w, h), factor)


def _wh_pair(value, name: str):
    if value is None:
        return None
    if isinstance(value, (int, float)):
        return (value, value)
    if len(value) != 2:
        raise ValueError(f'{name} must be a number or a (w, h) pair, got '
                         f'{value!r}')
    return tuple(value)


@TRANSFORMS.register_module()
class Resize(BaseTransform):
    """Resize the image (cv2) and scale and clip the boxes.

    Args:
        scale: target ``(w, h)`` (an int means square). With ``keep_ratio``
            it is a ``(long, short)`` bound: see :func:`rescale_size`.
        scale_factor: resize by a factor (number or ``(sx, sy)``) instead.
        keep_ratio: keep the aspect ratio.
        clip_object_border: clip boxes to the resized image.
        backend: only ``'cv2'``.
        interpolation: ``nearest``, ``bilinear`` (cv2 ``INTER_LINEAR``),
            ``bicubic``, ``area`` or ``lanczos``.

    Sets ``img``, ``img_shape (h, w)``, ``scale`` (the target ``(w, h)``),
    ``scale_factor = (new_w / w, new_h / h)`` (the realised ratios, so the
    two may differ slightly with ``keep_ratio``) and ``keep_ratio``. Boxes
    are multiplied by ``(sx, sy, sx, sy)`` in float32, then x is clipped to
    ``[0, new_w]`` and y to ``[0, new_h]``.
    """

    def __init__(self,
                 scale: Union[int, Tuple[int, int], None] = None,
                 scale_factor: Union[float, Tuple[float, float],
                                     None] = None,
                 keep_ratio: bool = False,
                 clip_object_border: bool = True,
                 backend: str = 'cv2',
                 interpolation: str = 'bilinear'):
        if scale is None and scale_factor is None:
            raise ValueError('Resize needs scale=(w, h) or scale_factor; '
                             'both are None')
        if backend != 'cv2':
            raise ValueError(f"Resize: only backend='cv2' is supported, got "
                             f'{backend!r}')
        if interpolation not in _INTERPOLATION:
            raise ValueError(
                f'Resize: interpolation must be one of '
                f'{sorted(_INTERPOLATION)}, got {interpolation!r}')
        self.scale = _wh_pair(scale, 'Resize scale')
        self.scale_factor = _wh_pair(scale_factor, 'Resize scale_factor')
        self.keep_ratio = keep_ratio
        self.clip_object_border = clip_object_border
        self.backend = backend
        self.interpolation = interpolation

    def transform(self, results: dict) -> dict:
        require_keys(results, ['img'], 'Resize')
        img = results['img']
        h, w = img.shape[:2]
        target = self.scale if self.scale else _scale_size(
            (w, h), self.scale_factor)
        if self.keep_ratio:
            new_w, new_h = rescale_size(w, h, target)
        else:
            new_w, new_h = int(target[0]), int(target[1])
        results['img'] = cv2.resize(
            img, (new_w, new_h),
            interpolation=_INTERPOLATION[self.interpolation])
        results['img_shape'] = (new_h, new_w)
        results['scale'] = target
        results['scale_factor'] = (new_w / w, new_h / h)
        results['keep_ratio'] = self.keep_ratio
        if results.get('gt_bboxes') is not None:
            sx, sy = results['scale_factor']
            factor = np.array([sx, sy, sx, sy], dtype=np.float32)
            boxes = results['gt_bboxes'].astype(np.float32) * factor
            if self.clip_object_border:
                boxes = clip_boxes(boxes, (new_h, new_w))
            results['gt_bboxes'] = boxes
        if results.get('gt_seg_map') is not None:
            results['gt_seg_map'] = cv2.resize(
                results['gt_seg_map'], (new_w, new_h),
                interpolation=cv2.INTER_NEAREST)
        return results


def clip_boxes(boxes: np.ndarray, img_shape) -> np.ndarray:
    """Clip x to ``[0, w]`` and y to ``[0, h]``; ``img_shape = (h, w)``."""
    boxes = boxes.copy()
    boxes[:, 0::2] = boxes[:, 0::2].clip(0, img_shape[1])
    boxes[:, 1::2] = boxes[:, 1::2].clip(0, img_shape[0])
    return boxes


@TRANSFORMS.register_module()
class RandomChoiceResize(BaseTransform):
    """Resize to one of ``scales``, picked uniformly with
    ``np.random.randint(len(scales))``; sets ``scale_idx``.

    ``resize_type`` names the resize transform (``'Resize'``) and
    ``resize_kwargs`` are its other arguments (``keep_ratio=True``, ...).
    """

    def __init__(self,
                 scales: Sequence[Union[int, Tuple[int, int]]],
                 resize_type: str = 'Resize',
                 **resize_kwargs):
        if isinstance(scales, (int, float)) or len(scales) == 0:
            raise ValueError('RandomChoiceResize: scales must be a non-empty '
                             f'list of (w, h) sizes, got {scales!r}')
        self.scales = [_wh_pair(s, 'RandomChoiceResize scales')
                       for s in scales]
        self.resize_type = resize_type
        self.resize_kwargs = resize_kwargs
        self._resize = TRANSFORMS.build(
            dict(type=resize_type, scale=self.scales[0], **resize_kwargs))

    def transform(self, results: dict) -> dict:
        scale_idx = np.random.randint(len(self.scales))
        self._resize.scale = self.scales[scale_idx]
        results = self._resize(results)
        results['scale_idx'] = scale_idx
        return results


@TRANSFORMS.register_module()
class RandomFlip(BaseTransform):
    """Flip the image and boxes at random.

    Args:
        prob: flip probability: a float shared equally by the directions,
            or one float per direction (their sum <= 1).
        direction: ``'horizontal'``, ``'vertical'``, ``'diagonal'`` or a
            list of them.

    The direction is drawn with ``np.random.choice(directions + [None],
    p=probs + [1 - sum(probs)])``; ``None`` means no flip. Sets ``flip``
    and ``flip_direction``. Boxes follow
    :func:`detkit.structures.bbox_flip` with the current image size
    (horizontal: ``x1' = w - x2``, ``x2' = w - x1``).
    """

    _DIRECTIONS = ('horizontal', 'vertical', 'diagonal')

    def __init__(self,
                 prob: Union[float, List[float], None] = None,
                 direction: Union[str, List[str]] = 'horizontal'):
        directions = [direction] if isinstance(direction, str) else list(
            direction)
        bad = [d for d in directions if d not in self._DIRECTIONS]
        if bad or not directions:
            raise ValueError(f'RandomFlip: direction must be one of '
                             f'{self._DIRECTIONS} or a list of them, got '
                             f'{direction!r}')
        if isinstance(prob, (int, float)) and not isinstance(prob, bool):
            if not 0 <= prob <= 1:
                raise ValueError(f'RandomFlip: prob={prob} is not in [0, 1]')
            probs = [prob / len(directions)] * len(directions)
        elif isinstance(prob, (list, tuple)):
            if len(prob) != len(directions) or not 0 <= sum(prob) <= 1:
                raise ValueError(
                    f'RandomFlip: prob={prob!r} needs one probability per '
                    f'direction ({directions}) summing to at most 1')
            probs = list(prob)
        else:
            raise ValueError('RandomFlip: prob must be a float or a list of '
                             f'floats (e.g. prob=0.5), got {prob!r}')
        self.prob = prob
        self.direction = direction
        self._choices = directions + [None]
        self._probs = probs + [1.0 - sum(probs)]

    def transform(self, results: dict) -> dict:
        require_keys(results, ['img'], 'RandomFlip')
        direction = np.random.choice(self._choices, p=self._probs)
        if direction is None:
            results['flip'] = False
            results['flip_direction'] = None
            return results
        direction = str(direction)
        results['flip'] = True
        results['flip_direction'] = direction
        axis = {'horizontal': 1, 'vertical': 0, 'diagonal': (0, 1)}[direction]
        img_shape = results['img'].shape[:2]
        results['img'] = np.flip(results['img'], axis=axis)
        if results.get('gt_bboxes') is not None:
            boxes = torch.from_numpy(
                np.asarray(results['gt_bboxes'], dtype=np.float32))
            results['gt_bboxes'] = bbox_flip(boxes, img_shape,
                                             direction).numpy()
        if results.get('gt_seg_map') is not None:
            results['gt_seg_map'] = np.flip(results['gt_seg_map'], axis=axis)
        return results


_BORDER_MODES = {
    'constant': cv2.BORDER_CONSTANT,
    'edge': cv2.BORDER_REPLICATE,
    'reflect': cv2.BORDER_REFLECT_101,
    'symmetric': cv2.BORDER_REFLECT,
}


@TRANSFORMS.register_module()
class Pad(BaseTransform):
    """Pad the image at the bottom and right.

    Args:
        size: fixed output ``(w, h)``.
        size_divisor: pad h and w up to multiples of it.
        pad_to_square: pad to ``max(h, w)`` square first (then
            ``size_divisor`` applies to that square).
        pad_val: ``dict(img=..., seg=...)`` (a number means the image).
        padding_mode: ``constant``, ``edge``, ``reflect`` or ``symmetric``.

    Sets ``img``, ``img_shape`` and ``pad_shape`` (both ``(h, w)`` of the
    padded image), ``pad_fixed_size`` and ``pad_size_divisor``. Boxes are
    unchanged because the origin does not move.
    """

    def __init__(self,
                 size: Optional[Tuple[int, int]] = None,
                 size_divisor: Optional[int] = None,
                 pad_to_square: bool = False,
                 pad_val: Union[int, float, dict] = dict(img=0, seg=255),
                 padding_mode: str = 'constant'):
        if pad_to_square and size is not None:
            raise ValueError('Pad: give size or pad_to_square, not both')
        if not pad_to_square and (size is None) == (size_divisor is None):
            raise ValueError('Pad needs exactly one of size=(w, h) and '
                             'size_divisor (or pad_to_square=True)')
        if padding_mode not in _BORDER_MODES:
            raise ValueError(f'Pad: padding_mode must be one of '
                             f'{sorted(_BORDER_MODES)}, got {padding_mode!r}')
        if isinstance(pad_val, (int, float)):
            pad_val = dict(img=pad_val, seg=255)
        self.size = size
        self.size_divisor = size_divisor
        self.pad_to_square = pad_to_square
        self.pad_val = pad_val
        self.padding_mode = padding_mode

    def _target_hw(self, h: int, w: int) -> Tuple[int, int]:
        if self.pad_to_square:
            h = w = max(h, w)
        if self.size_divisor:
            d = self.size_divisor
            return math.ceil(h / d) * d, math.ceil(w / d) * d
        if self.size is not None:
            return self.size[1], self.size[0]
        return h, w

    def _pad(self, img: np.ndarray, hw, value) -> np.ndarray:
        bottom, right = hw[0] - img.shape[0], hw[1] - img.shape[1]
        if bottom < 0 or right < 0:
            raise ValueError(
                f'Pad: the image ({img.shape[0]}x{img.shape[1]}, h x w) is '
                f'larger than the padded size {hw[0]}x{hw[1]}; make '
                '`size` at least as large as the resized image.')
        if img.ndim == 3 and np.isscalar(value):
            value = [value] * img.shape[2]
        return cv2.copyMakeBorder(img, 0, bottom, 0, right,
                                  _BORDER_MODES[self.padding_mode],
                                  value=value)

    def transform(self, results: dict) -> dict:
        require_keys(results, ['img'], 'Pad')
        img = results['img']
        hw = self._target_hw(*img.shape[:2])
        padded = self._pad(img, hw, self.pad_val.get('img', 0))
        if padded.ndim == 2 and img.ndim == 3:  # cv2 drops a 1-channel axis
            padded = padded[..., None]
        results['img'] = padded
        results['img_shape'] = padded.shape[:2]
        results['pad_shape'] = padded.shape[:2]
        results['pad_fixed_size'] = self.size
        results['pad_size_divisor'] = self.size_divisor
        if results.get('gt_seg_map') is not None:
            results['gt_seg_map'] = self._pad(results['gt_seg_map'], hw,
                                              self.pad_val.get('seg', 255))
        return results


def _keep_instances(results: dict, keep: np.ndarray) -> None:
    """Index every per-box array with the same mask so they stay aligned."""
    for key in ('gt_bboxes', 'gt_bboxes_labels', 'gt_ignore_flags'):
        if results.get(key) is not None:
            results[key] = results[key][keep]


@TRANSFORMS.register_module()
class Expand(BaseTransform):
    """Zoom out (SSD): paste the image at a random place on a larger canvas.

    With probability ``prob`` the image ``(h, w)`` is copied into a canvas
    of ``(int(h * r), int(w * r))`` filled with ``mean``, with ``r`` drawn
    uniformly from ``ratio_range``, at ``left = int(U(0, w * r - w))``,
    ``top = int(U(0, h * r - h))``; boxes move by ``(left, top)``.

    Args:
        mean: canvas colour in RGB order when ``to_rgb`` (the preprocessor's
            mean), otherwise in the image's BGR order. It is cast to the
            image dtype (uint8 truncates 123.675 to 123).
        to_rgb: ``mean`` is given in RGB; it is reversed to fill a BGR image.
        ratio_range: ``(min, max)`` of the expansion ratio.
        seg_ignore_label: fill value of ``gt_seg_map`` outside the image.
        prob: probability of expanding.

    Draw order (NumPy global generator): the coin ``U(0, 1) > prob`` skips,
    then ``r``, then ``left``, then ``top``.
    """

    def __init__(self,
                 mean: Sequence[float] = (0, 0, 0),
                 to_rgb: bool = True,
                 ratio_range: Sequence[float] = (1, 4),
                 seg_ignore_label: Optional[int] = None,
                 prob: float = 0.5):
        if len(ratio_range) != 2 or not 1 <= ratio_range[0] <= ratio_range[1]:
            raise ValueError('Expand: ratio_range must be (min, max) with '
                             f'1 <= min <= max, got {ratio_range!r}')
        self.mean = tuple(mean[::-1]) if to_rgb else tuple(mean)
        self.to_rgb = to_rgb
        self.ratio_range = tuple(ratio_range)
        self.seg_ignore_label = seg_ignore_label
        self.prob = prob

    def transform(self, results: dict) -> dict:
        require_keys(results, ['img'], 'Expand')
        if np.random.uniform(0, 1) > self.prob:
            return results
        img = results['img']
        h, w, c = img.shape
        ratio = np.random.uniform(*self.ratio_range)
        left = int(np.random.uniform(0, w * ratio - w))
        top = int(np.random.uniform(0, h * ratio - h))
        canvas = np.empty((int(h * ratio), int(w * ratio), c), img.dtype)
        # Unsafe cast: a uint8 canvas truncates the float mean.
        canvas[...] = np.array(self.mean, dtype=np.float64).astype(img.dtype)
        canvas[top:top + h, left:left + w] = img
        results['img'] = canvas
        results['img_shape'] = canvas.shape[:2]
        if results.get('gt_bboxes') is not None:
            shift = np.array([left, top, left, top], dtype=np.float32)
            results['gt_bboxes'] = results['gt_bboxes'] + shift
        if results.get('gt_seg_map') is not None:
            if self.seg_ignore_label is None:
                raise ValueError('Expand: set seg_ignore_label to expand '
                                 'gt_seg_map')
            seg = results['gt_seg_map']
            out = np.full(canvas.shape[:2], self.seg_ignore_label, seg.dtype)
            out[top:top + h, left:left + w] = seg
            results['gt_seg_map'] = out
        return results


@TRANSFORMS.register_module()
class MinIoURandomCrop(BaseTransform):
    """Random crop whose IoU with every box is at least a drawn minimum (SSD).

    Each round draws a mode from ``(1, *min_ious, 0)``: 1 keeps the image;
    otherwise up to 50 patches are tried, each ``new_w ~ U(min_crop_size *
    w, w)``, ``new_h ~ U(min_crop_size * h, h)``, rejected unless ``0.5 <=
    new_h / new_w <= 2``; its corner is ``left = U(w - new_w, 1)``, ``top =
    U(h - new_h, 1)`` (mmdetection calls ``np.random.uniform`` with one
    argument, whose other bound defaults to 1; kept for identical draws),
    and the patch is ``int(left), int(top), int(left + new_w), int(top +
    new_h)``. A patch is accepted when it is not degenerate, its IoU with
    every box is ``>= mode`` and at least one box centre lies strictly
    inside it. Boxes whose centre is outside are dropped (with their labels
    and ignore flags), the others are shifted by ``-(left, top)`` and, with
    ``bbox_clip_border``, clipped to the patch. An image without boxes is
    cropped too. When all 50 tries fail, a new mode is drawn.
    """

    def __init__(self,
                 min_ious: Sequence[float] = (0.1, 0.3, 0.5, 0.7, 0.9),
                 min_crop_size: float = 0.3,
                 bbox_clip_border: bool = True):
        if not 0 < min_crop_size <= 1:
            raise ValueError('MinIoURandomCrop: min_crop_size must be in '
                             f'(0, 1], got {min_crop_size}')
        self.min_ious = tuple(min_ious)
        self.sample_mode = (1, *min_ious, 0)
        self.min_crop_size = min_crop_size
        self.bbox_clip_border = bbox_clip_border

    def _try_patch(self, h: int, w: int, boxes: np.ndarray, min_iou: float):
        """One random patch ``[x1, y1, x2, y2]`` and the mask of the boxes
        whose centre it contains, or None when the patch is rejected."""
        new_w = np.random.uniform(self.min_crop_size * w, w)
        new_h = np.random.uniform(self.min_crop_size * h, h)
        if new_h / new_w < 0.5 or new_h / new_w > 2:
            return None
        left = np.random.uniform(w - new_w)
        top = np.random.uniform(h - new_h)
        patch = np.array((int(left), int(top), int(left + new_w),
                          int(top + new_h)))
        if patch[2] == patch[0] or patch[3] == patch[1]:
            return None
        if len(boxes) == 0:
            return patch, np.zeros(0, dtype=bool)
        ious = bbox_overlaps(
            torch.from_numpy(patch[None].astype(np.float32)),
            torch.from_numpy(boxes)).numpy().reshape(-1)
        if ious.min() < min_iou:
            return None
        cx = (boxes[:, 0] + boxes[:, 2]) / 2
        cy = (boxes[:, 1] + boxes[:, 3]) / 2
        inside = ((cx > patch[0]) & (cy > patch[1]) & (cx < patch[2]) &
                  (cy < patch[3]))
        return (patch, inside) if inside.any() else None

    def transform(self, results: dict) -> dict:
        require_keys(results, ['img', 'gt_bboxes'], 'MinIoURandomCrop')
        img = results['img']
        h, w = img.shape[:2]
        boxes = np.asarray(results['gt_bboxes'], dtype=np.float32)
        while True:
            mode = np.random.choice(self.sample_mode)
            if mode == 1:
                return results
            for _ in range(50):
                found = self._try_patch(h, w, boxes, mode)
                if found is not None:
                    break
            else:
                continue
            patch, inside = found
            if len(boxes):
                _keep_instances(results, inside)
                shift = np.array([patch[0], patch[1]] * 2, dtype=np.float32)
                kept = results['gt_bboxes'] - shift
                if self.bbox_clip_border:
                    kept = clip_boxes(kept, (patch[3] - patch[1],
                                             patch[2] - patch[0]))
                results['gt_bboxes'] = kept
            results['img'] = img[patch[1]:patch[3], patch[0]:patch[2]]
            results['img_shape'] = results['img'].shape[:2]
            if results.get('gt_seg_map') is not None:
                results['gt_seg_map'] = results['gt_seg_map'][
                    patch[1]:patch[3], patch[0]:patch[2]]
            return results
