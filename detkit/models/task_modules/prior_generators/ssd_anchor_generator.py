"""SSD anchors: per-level sizes from ``basesize_ratio_range`` (or explicit
min/max sizes), centred in the middle of each stride cell.

Conventions (docs/anchors.md): boxes ``(x1, y1, x2, y2)`` in input
pixels; a level's anchors sit at ``((j + 0.5) * stride_w, (i + 0.5) *
stride_h)``; per location, the order is ``[s1*r1, s2*r1, s1*(1/r_1),
s1*r_1, s1*(1/r_2), s1*r_2, ...]`` with ``s1 = 1``, ``s2 =
sqrt(max_size / min_size)`` and ``w = min_size * s / sqrt(r)``,
``h = min_size * s * sqrt(r)``.
"""
import math
from collections import OrderedDict
from typing import List, Tuple

import torch
from torch import Tensor

from ....registry import TASK_UTILS
from .anchor_generator import AnchorGenerator, _pair

# First-level (min %, max %) of the input size that SSD prepends to the
# evenly spaced levels, keyed by (input_size, basesize_ratio_range[0]).
_FIRST_LEVEL_PERCENT = {
    (300, 0.15): (7, 15),
    (300, 0.2): (10, 20),
    (512, 0.1): (4, 10),
    (512, 0.15): (7, 15),
}


def ssd_base_sizes(input_size: int, basesize_ratio_range: Tuple[float, float],
                   num_levels: int) -> Tuple[List[int], List[int]]:
    """Per-level ``(min_sizes, max_sizes)`` with SSD's integer arithmetic.

    ``lo, hi`` are the range in whole percent; the levels after the first
    are ``int(S * r / 100)`` for ``r`` in ``range(lo, hi + 1, step)`` with
    ``step = int((hi - lo) / (L - 2))``, each level's max being the next
    ``r``. SSD300 COCO (0.15, 0.9) gives min ``[21, 45, 99, 153, 207, 261]``
    and max ``[45, 99, 153, 207, 261, 315]``.
    """
    key = (input_size, basesize_ratio_range[0])
    if key not in _FIRST_LEVEL_PERCENT:
        raise ValueError(
            'SSDAnchorGenerator: basesize_ratio_range '
            f'{tuple(basesize_ratio_range)} with input_size {input_size} is '
            'not one of the SSD settings (input_size 300 with range start '
            '0.15 or 0.2, 512 with 0.1 or 0.15); pass min_sizes and '
            'max_sizes explicitly instead')
    if num_levels < 3:
        raise ValueError('SSDAnchorGenerator: basesize_ratio_range needs at '
                         f'least 3 levels, got {num_levels}')
    lo = int(basesize_ratio_range[0] * 100)
    hi = int(basesize_ratio_range[1] * 100)
    step = int((hi - lo) / (num_levels - 2))
    min_sizes, max_sizes = [], []
    for ratio in range(lo, hi + 1, step):
        min_sizes.append(int(input_size * ratio / 100))
        max_sizes.append(int(input_size * (ratio + step) / 100))
    first_min, first_max = _FIRST_LEVEL_PERCENT[key]
    min_sizes.insert(0, int(input_size * first_min / 100))
    max_sizes.insert(0, int(input_size * first_max / 100))
    if len(min_sizes) != num_levels:
        raise ValueError(
            f'SSDAnchorGenerator: basesize_ratio_range '
            f'{tuple(basesize_ratio_range)} yields {len(min_sizes)} levels '
            f'but {num_levels} strides were given')
    return min_sizes, max_sizes


@TASK_UTILS.register_module()
class SSDAnchorGenerator(AnchorGenerator):
    """Anchor generator for SSD / SSDLite.

    Args:
        strides: per level, an int or a ``(w, h)`` pair.
        ratios: per level, a list of ratios ``r``; each gives anchors of
            ratio ``1/r`` and ``r`` besides the two ratio-1 anchors.
        min_sizes, max_sizes: explicit per-level sizes (SSDLite); when
            None they follow from ``basesize_ratio_range`` and
            ``input_size``.
        basesize_ratio_range: ``(a, b)`` fractions of the input size.
        input_size: 300 or 512 (only used without explicit sizes).
        scale_major: every mmdetection SSD config sets False, which gives
            the layout in the module docstring; True keeps mmdetection's
            (different) selection for fidelity.

    ``grid_priors``, ``valid_flags`` and the properties are those of
    :class:`AnchorGenerator`.
    """

    def __init__(self,
                 strides,
                 ratios,
                 min_sizes=None,
                 max_sizes=None,
                 basesize_ratio_range=(0.15, 0.9),
                 input_size=300,
                 scale_major=True):
        if len(strides) != len(ratios):
            raise ValueError(f'SSDAnchorGenerator: {len(strides)} strides '
                             f'but {len(ratios)} ratio lists; give one list '
                             'of ratios per level')
        self._strides = [_pair(s) for s in strides]
        num_levels = len(self._strides)
        if (min_sizes is None) != (max_sizes is None):
            raise ValueError('SSDAnchorGenerator: give both min_sizes and '
                             'max_sizes, or neither')
        if min_sizes is None:
            min_sizes, max_sizes = ssd_base_sizes(input_size,
                                                  basesize_ratio_range,
                                                  num_levels)
        if not len(min_sizes) == len(max_sizes) == num_levels:
            raise ValueError(
                f'SSDAnchorGenerator: {len(min_sizes)} min_sizes and '
                f'{len(max_sizes)} max_sizes for {num_levels} strides')
        self.input_size = input_size
        self.basesize_ratio_range = basesize_ratio_range
        self.min_sizes = list(min_sizes)
        self.max_sizes = list(max_sizes)
        self.base_sizes = list(min_sizes)
        self.scales = [
            torch.tensor([1.0, math.sqrt(mx / mn)], dtype=torch.float32)
            for mn, mx in zip(min_sizes, max_sizes)
        ]
        self.ratios = []
        for level_ratios in ratios:
            expanded = [1.0]
            for r in level_ratios:
                expanded += [1 / r, r]
            self.ratios.append(torch.tensor(expanded, dtype=torch.float32))
        self.scale_major = scale_major
        self.center_offset = 0.0
        self.centers = [(sw / 2., sh / 2.) for sw, sh in self._strides]
        self.octave_base_scale = self.scales_per_octave = None
        self._base_anchors = self.gen_base_anchors()
        self._grid_cache = OrderedDict()

    def gen_base_anchors(self) -> List[Tensor]:
        """Per level ``(len(ratios_k) + 1, 4)``: all ratios at scale 1,
        plus the ratio-1 anchor at scale ``sqrt(max / min)`` in second
        place."""
        anchors = []
        for i, base_size in enumerate(self.base_sizes):
            full = self.gen_single_level_base_anchors(
                base_size,
                scales=self.scales[i],
                ratios=self.ratios[i],
                center=self.centers[i])
            num_ratios = len(self.ratios[i])
            keep = [0, num_ratios] + list(range(1, num_ratios))
            anchors.append(full[keep])
        return anchors

    def __repr__(self) -> str:
        return (f'SSDAnchorGenerator(strides={self._strides}, '
                f'min_sizes={self.min_sizes}, max_sizes={self.max_sizes}, '
                f'ratios={[r.tolist() for r in self.ratios]}, '
                f'scale_major={self.scale_major}, '
                f'num_base_priors={self.num_base_priors})')
