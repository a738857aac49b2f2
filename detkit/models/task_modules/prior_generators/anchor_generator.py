"""Grid anchors for anchor-based dense heads (RetinaNet, RPN, Faster R-CNN).

Conventions (docs/anchors.md): boxes are float ``(x1, y1, x2, y2)`` in
input-image pixels, width ``x2 - x1`` (no +1). A level's base anchors are
centred on ``(center_offset * base_size, center_offset * base_size)``
(``(0, 0)`` by default) and are shifted to every grid point
``(j * stride_w, i * stride_h)``. Anchors are enumerated y-major, then x,
then base anchor: index ``(i * feat_w + j) * A + a``.
"""
import math
from collections import OrderedDict
from typing import List, Sequence, Tuple

import torch
from torch import Tensor

from ....registry import TASK_UTILS


def _pair(value) -> Tuple:
    """``8 -> (8, 8)``; a ``(w, h)`` pair is kept as a tuple."""
    if isinstance(value, (list, tuple)):
        if len(value) != 2:
            raise ValueError(f'a stride must be an int or a (w, h) pair, '
                             f'got {value!r}')
        return tuple(value)
    return (value, value)


@TASK_UTILS.register_module()
class AnchorGenerator:
    """Standard 2D anchor generator with mmdetection's parameters.

    Args:
        strides: per level, an int or a ``(stride_w, stride_h)`` pair.
        ratios: anchor height / width ratios, shared by all levels.
        scales: anchor scales relative to ``base_size``; give either these
            or ``octave_base_scale`` and ``scales_per_octave``.
        base_sizes: per-level base size; default the (smaller) stride.
        scale_major: order of the base anchors: ratio outer / scale inner
            (True) or scale outer / ratio inner (False).
        octave_base_scale, scales_per_octave: scales
            ``octave_base_scale * 2 ** (i / scales_per_octave)``.
        centers: per-level ``(x, y)`` centre of the base anchors.
        center_offset: centre at ``center_offset * base_size`` (only when
            ``centers`` is None).
        use_box_type: kept for config compatibility; detkit works on plain
            tensors, so it must be False.
    """

    # How many featmap-size combinations ``grid_priors`` remembers; images
    # of a dataset come in few padded sizes, so this covers training.
    cache_size = 32

    def __init__(self,
                 strides,
                 ratios,
                 scales=None,
                 base_sizes=None,
                 scale_major: bool = True,
                 octave_base_scale=None,
                 scales_per_octave=None,
                 centers=None,
                 center_offset: float = 0.0,
                 use_box_type: bool = False):
        name = type(self).__name__
        if use_box_type:
            raise ValueError(f'{name}: use_box_type=True is not supported; '
                             'detkit priors are plain (N, 4) tensors. Remove '
                             'use_box_type from the config.')
        if center_offset != 0 and centers is not None:
            raise ValueError(f'{name}: give either centers or a non-zero '
                             f'center_offset, not both (got {centers!r} and '
                             f'{center_offset!r})')
        if not 0 <= center_offset <= 1:
            raise ValueError(f'{name}: center_offset must be in [0, 1], got '
                             f'{center_offset!r}')
        self._strides = [_pair(s) for s in strides]
        if centers is not None and len(centers) != len(self._strides):
            raise ValueError(f'{name}: {len(centers)} centers for '
                             f'{len(self._strides)} strides')
        if base_sizes is None:
            base_sizes = [min(s) for s in self._strides]
        if len(base_sizes) != len(self._strides):
            raise ValueError(f'{name}: {len(base_sizes)} base_sizes for '
                             f'{len(self._strides)} strides')
        self.base_sizes = list(base_sizes)

        use_octave = (octave_base_scale is not None
                      or scales_per_octave is not None)
        if (scales is not None) == use_octave:
            raise ValueError(
                f'{name}: give either scales or (octave_base_scale and '
                'scales_per_octave), exactly one of the two')
        if use_octave:
            if octave_base_scale is None or scales_per_octave is None:
                raise ValueError(f'{name}: octave_base_scale and '
                                 'scales_per_octave must be given together')
            # float64 products rounded once to float32, as mmdetection.
            scales = [
                octave_base_scale * 2**(i / scales_per_octave)
                for i in range(scales_per_octave)
            ]
        self.octave_base_scale = octave_base_scale
        self.scales_per_octave = scales_per_octave
        self.scales = torch.tensor(scales, dtype=torch.float32)
        self.ratios = torch.tensor(ratios, dtype=torch.float32)
        self.scale_major = scale_major
        self.centers = centers
        self.center_offset = center_offset
        self._base_anchors = self.gen_base_anchors()
        self._grid_cache = OrderedDict()

    # ------------------------------------------------------------ metadata
    @property
    def strides(self) -> List[Tuple]:
        """Per-level ``(stride_w, stride_h)``."""
        return self._strides

    @property
    def num_levels(self) -> int:
        return len(self._strides)

    @property
    def base_anchors(self) -> List[Tensor]:
        """Per level ``(A, 4)`` anchors centred on the level's centre."""
        return self._base_anchors

    @property
    def num_base_priors(self) -> List[int]:
        """Anchors per location, per level."""
        return [b.size(0) for b in self._base_anchors]

    # -------------------------------------------------------- base anchors
    def gen_base_anchors(self) -> List[Tensor]:
        return [
            self.gen_single_level_base_anchors(
                base_size,
                scales=self.scales,
                ratios=self.ratios,
                center=None if self.centers is None else self.centers[i])
            for i, base_size in enumerate(self.base_sizes)
        ]

    def gen_single_level_base_anchors(self,
                                      base_size,
                                      scales: Tensor,
                                      ratios: Tensor,
                                      center=None) -> Tensor:
        """``(len(ratios) * len(scales), 4)`` float32 anchors.

        A ratio ``r`` is height / width: ``w = base / sqrt(r) * scale``,
        ``h = base * sqrt(r) * scale``. No rounding (mmdetection's
        ``Legacy*`` generators are the ones that round).
        """
        w = h = base_size
        if center is None:
            x_center, y_center = self.center_offset * w, self.center_offset * h
        else:
            x_center, y_center = center
        h_ratios = torch.sqrt(ratios)
        w_ratios = 1 / h_ratios
        # The float32 products are taken in mmdetection's order so the
        # anchors match bit for bit.
        if self.scale_major:
            ws = (w * w_ratios[:, None] * scales[None, :]).reshape(-1)
            hs = (h * h_ratios[:, None] * scales[None, :]).reshape(-1)
        else:
            ws = (w * scales[:, None] * w_ratios[None, :]).reshape(-1)
            hs = (h * scales[:, None] * h_ratios[None, :]).reshape(-1)
        return torch.stack([
            x_center - 0.5 * ws, y_center - 0.5 * hs, x_center + 0.5 * ws,
            y_center + 0.5 * hs
        ], -1)

    # ---------------------------------------------------------------- grid
    def grid_priors(self,
                    featmap_sizes: Sequence[Sequence[int]],
                    dtype: torch.dtype = torch.float32,
                    device='cpu') -> List[Tensor]:
        """Anchors of every level: list of ``(H * W * A, 4)``.

        Results are cached per (featmap sizes, dtype, device); the returned
        tensors are shared with the cache, so do not modify them in place.
        """
        if len(featmap_sizes) != self.num_levels:
            raise ValueError(
                f'{type(self).__name__}.grid_priors: got {len(featmap_sizes)}'
                f' feature maps for {self.num_levels} anchor levels (strides '
                f'{self._strides}); the neck must output one map per stride')
        device = torch.device(device)
        key = (tuple((int(s[0]), int(s[1])) for s in featmap_sizes), dtype,
               device)
        cached = self._grid_cache.get(key)
        if cached is not None:
            self._grid_cache.move_to_end(key)
            return list(cached)
        priors = [
            self.single_level_grid_priors(size, i, dtype=dtype, device=device)
            for i, size in enumerate(key[0])
        ]
        self._grid_cache[key] = priors
        if len(self._grid_cache) > self.cache_size:
            self._grid_cache.popitem(last=False)
        return list(priors)

    def single_level_grid_priors(self,
                                 featmap_size: Sequence[int],
                                 level_idx: int,
                                 dtype: torch.dtype = torch.float32,
                                 device='cpu') -> Tensor:
        """``(H * W * A, 4)`` anchors of one level, order (y, x, anchor)."""
        feat_h, feat_w = int(featmap_size[0]), int(featmap_size[1])
        base = self._base_anchors[level_idx].to(device=device, dtype=dtype)
        stride_w, stride_h = self._strides[level_idx]
        shift_x = torch.arange(feat_w, device=device).to(dtype) * stride_w
        shift_y = torch.arange(feat_h, device=device).to(dtype) * stride_h
        xx = shift_x.repeat(feat_h)
        yy = shift_y.repeat_interleave(feat_w)
        shifts = torch.stack([xx, yy, xx, yy], -1)
        return (shifts[:, None, :] + base[None, :, :]).reshape(-1, 4)

    # --------------------------------------------------------- valid flags
    def valid_flags(self,
                    featmap_sizes: Sequence[Sequence[int]],
                    pad_shape: Sequence[int],
                    device='cpu') -> List[Tensor]:
        """Per level a bool ``(H * W * A,)``: True where the anchor's grid
        point lies inside the image's own padded area ``pad_shape = (h, w)``
        (a smaller image of a batch is padded further to the batch size).
        """
        pad_h, pad_w = pad_shape[:2]
        flags = []
        for i, size in enumerate(featmap_sizes):
            feat_h, feat_w = int(size[0]), int(size[1])
            stride_w, stride_h = self._strides[i]
            valid_h = min(int(math.ceil(pad_h / stride_h)), feat_h)
            valid_w = min(int(math.ceil(pad_w / stride_w)), feat_w)
            flags.append(
                self.single_level_valid_flags((feat_h, feat_w),
                                              (valid_h, valid_w),
                                              self.num_base_priors[i],
                                              device=device))
        return flags

    @staticmethod
    def single_level_valid_flags(featmap_size: Sequence[int],
                                 valid_size: Sequence[int],
                                 num_base_anchors: int,
                                 device='cpu') -> Tensor:
        """Bool ``(H * W * A,)``: grid point ``(i, j)`` is valid when
        ``i < valid_h`` and ``j < valid_w``."""
        feat_h, feat_w = featmap_size
        valid_h, valid_w = valid_size
        valid_y = torch.arange(feat_h, device=device) < valid_h
        valid_x = torch.arange(feat_w, device=device) < valid_w
        valid = valid_y[:, None] & valid_x[None, :]
        return valid.reshape(-1, 1).expand(-1, num_base_anchors).reshape(-1)

    def __repr__(self) -> str:
        return (f'{type(self).__name__}(strides={self._strides}, '
                f'ratios={self.ratios.tolist()}, '
                f'scales={self.scales.tolist()}, '
                f'base_sizes={self.base_sizes}, '
                f'scale_major={self.scale_major}, '
                f'num_base_priors={self.num_base_priors})')
