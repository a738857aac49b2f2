"""Colour jitter of SSD: brightness, contrast, saturation, hue, channel swap.

Only pixel values change; boxes are untouched.
"""
from typing import Sequence

import cv2
import numpy as np

from detkit.registry import TRANSFORMS
from .base import BaseTransform, require_keys


@TRANSFORMS.register_module()
class PhotoMetricDistortion(BaseTransform):
    """Random photometric distortion of a BGR image, output float32.

    Steps, each applied when its own coin (``np.random.randint(2)``) says so:

    1. brightness: ``img += delta``, ``delta ~ U(-brightness_delta,
       brightness_delta)``;
    2. contrast, *before* the HSV steps when ``mode == 1``:
       ``img *= alpha``, ``alpha ~ U(*contrast_range)``;
    3. BGR -> HSV with OpenCV on float32 (H in degrees ``[0, 360)``, S in
       ``[0, 1]``, V unchanged). This conversion runs every time, so the
       float round trip happens even when no HSV step is drawn;
    4. saturation: ``S *= s``, ``s ~ U(*saturation_range)``; clipped to
       ``[0, 1]`` when ``s > 1``;
    5. hue: ``H += d``, ``d ~ U(-hue_delta, hue_delta)``, wrapped into
       ``[0, 360]``;
    6. HSV -> BGR;
    7. contrast, *after* the HSV steps when ``mode == 0``;
    8. channel swap: ``img = img[..., perm]``, ``perm`` a random permutation.

    Values are not clipped to ``[0, 255]``. All draws happen up front in
    mmdetection's order (mode, the five coins, delta, alpha, s, d, perm), so
    the number of NumPy draws does not depend on the coins.
    """

    def __init__(self,
                 brightness_delta: int = 32,
                 contrast_range: Sequence[float] = (0.5, 1.5),
                 saturation_range: Sequence[float] = (0.5, 1.5),
                 hue_delta: int = 18):
        self.brightness_delta = brightness_delta
        self.contrast_lower, self.contrast_upper = contrast_range
        self.saturation_lower, self.saturation_upper = saturation_range
        self.hue_delta = hue_delta

    def _draw(self) -> dict:
        rand = np.random
        draws = dict(
            mode=rand.randint(2),
            brightness=rand.randint(2),
            contrast=rand.randint(2),
            saturation=rand.randint(2),
            hue=rand.randint(2),
            swap=rand.randint(2))
        draws.update(
            delta=rand.uniform(-self.brightness_delta, self.brightness_delta),
            alpha=rand.uniform(self.contrast_lower, self.contrast_upper),
            sat=rand.uniform(self.saturation_lower, self.saturation_upper),
            hue_shift=rand.uniform(-self.hue_delta, self.hue_delta),
            perm=rand.permutation(3))
        return draws

    def transform(self, results: dict) -> dict:
        require_keys(results, ['img'], 'PhotoMetricDistortion')
        img = results['img'].astype(np.float32)
        d = self._draw()
        if d['brightness']:
            img += d['delta']
        if d['mode'] == 1 and d['contrast']:
            img *= d['alpha']
        img = cv2.cvtColor(img, cv2.COLOR_BGR2HSV)
        if d['saturation']:
            img[..., 1] *= d['sat']
            if d['sat'] > 1:
                img[..., 1] = img[..., 1].clip(0, 1)
        if d['hue']:
            hue = img[..., 0]
            hue += d['hue_shift']
            hue[hue > 360] -= 360
            hue[hue < 0] += 360
        img = cv2.cvtColor(img, cv2.COLOR_HSV2BGR)
        if d['mode'] == 0 and d['contrast']:
            img *= d['alpha']
        if d['swap']:
            img = img[..., d['perm']]
        results['img'] = img
        return results

    def __repr__(self) -> str:
        return (f'{type(self).__name__}(brightness_delta='
                f'{self.brightness_delta}, contrast_range='
                f'{(self.contrast_lower, self.contrast_upper)}, '
                f'saturation_range='
                f'{(self.saturation_lower, self.saturation_upper)}, '
                f'hue_delta={self.hue_delta})')
