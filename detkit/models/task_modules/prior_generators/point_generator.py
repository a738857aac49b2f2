"""Grid points for anchor-free dense heads (FCOS), one per feature-map cell.

Level ``l`` with stride ``(s_w, s_h)`` and a ``(H, W)`` feature map has the
``H * W`` points

    x = (j + offset) * s_w,    y = (i + offset) * s_h

(``offset = 0.5``: the centre of the cell; ``0``: its top-left corner) in
input-image pixels, enumerated y-major with x fastest: index ``i * W + j``.
The arithmetic is mmdetection's: the integer ``arange`` plus ``offset``,
times the stride, then cast to the requested dtype. With
``with_stride=True`` each point carries its level's strides as
``(x, y, s_w, s_h)``. See docs/anchors.md.

Valid flags mark the points whose cell lies inside an image's own padded
area: ``valid_h = min(ceil(pad_h / s_h), H)`` rows and
``valid_w = min(ceil(pad_w / s_w), W)`` columns (a smaller image of a batch
is padded further to the batch's size; its extra cells are not valid).
"""
import math
from collections import OrderedDict
from typing import List, Sequence

import torch
from torch import Tensor

from ....registry import TASK_UTILS
from .anchor_generator import _pair


@TASK_UTILS.register_module()
class MlvlPointGenerator:
    """Multi-level point generator with mmdetection's parameters.

    Args:
        strides: per level, an int or a ``(stride_w, stride_h)`` pair.
        offset: where in the cell the point sits, as a fraction of the
            stride (0.5: the centre).

    ``device`` arguments default to ``'cpu'`` (mmdetection's to
    ``'cuda'``); heads pass their feature maps' device.
    """

    # As AnchorGenerator: padded images come in few sizes, so a small cache
    # of grids covers a training run.
    cache_size = 32

    def __init__(self, strides, offset: float = 0.5):
        self._strides = [_pair(s) for s in strides]
        self.offset = offset
        self._grid_cache = OrderedDict()

    # ------------------------------------------------------------ metadata
    @property
    def strides(self) -> List[tuple]:
        """Per-level ``(stride_w, stride_h)``."""
        return self._strides

    @property
    def num_levels(self) -> int:
        return len(self._strides)

    @property
    def num_base_priors(self) -> List[int]:
        """Points per location, per level: always 1."""
        return [1] * len(self._strides)

    def _check_levels(self, featmap_sizes, where: str) -> None:
        if len(featmap_sizes) != self.num_levels:
            raise ValueError(
                f'MlvlPointGenerator.{where}: got {len(featmap_sizes)} '
                f'feature maps for {self.num_levels} point levels (strides '
                f'{self._strides}); the neck must output one map per stride')

    # ---------------------------------------------------------------- grid
    def grid_priors(self,
                    featmap_sizes: Sequence[Sequence[int]],
                    dtype: torch.dtype = torch.float32,
                    device='cpu',
                    with_stride: bool = False) -> List[Tensor]:
        """Points of every level: list of ``(H * W, 2)``, or ``(H * W, 4)``
        with ``with_stride``.

        Results are cached per (featmap sizes, dtype, device, with_stride);
        the returned tensors are shared with the cache, so do not modify
        them in place.
        """
        self._check_levels(featmap_sizes, 'grid_priors')
        device = torch.device(device)
        sizes = tuple((int(s[0]), int(s[1])) for s in featmap_sizes)
        key = (sizes, dtype, device, bool(with_stride))
        cached = self._grid_cache.get(key)
        if cached is not None:
            self._grid_cache.move_to_end(key)
            return list(cached)
        priors = [
            self.single_level_grid_priors(
                size, i, dtype=dtype, device=device, with_stride=with_stride)
            for i, size in enumerate(sizes)
        ]
        self._grid_cache[key] = priors
        if len(self._grid_cache) > self.cache_size:
            self._grid_cache.popitem(last=False)
        return list(priors)

    def single_level_grid_priors(self,
                                 featmap_size: Sequence[int],
                                 level_idx: int,
                                 dtype: torch.dtype = torch.float32,
                                 device='cpu',
                                 with_stride: bool = False) -> Tensor:
        """``(H * W, 2)`` points ``(x, y)`` of one level (``(H * W, 4)``
        ``(x, y, stride_w, stride_h)`` with ``with_stride``), y-major."""
        feat_h, feat_w = int(featmap_size[0]), int(featmap_size[1])
        stride_w, stride_h = self._strides[level_idx]
        # (arange + offset) * stride in the default float dtype, then the
        # cast: mmdetection's order, so half-precision points round alike.
        shift_x = ((torch.arange(feat_w, device=device) + self.offset) *
                   stride_w).to(dtype)
        shift_y = ((torch.arange(feat_h, device=device) + self.offset) *
                   stride_h).to(dtype)
        xx = shift_x.repeat(feat_h)
        yy = shift_y.repeat_interleave(feat_w)
        if not with_stride:
            return torch.stack([xx, yy], -1)
        sw = xx.new_full((xx.numel(), ), stride_w)
        sh = xx.new_full((xx.numel(), ), stride_h)
        return torch.stack([xx, yy, sw, sh], -1)

    def sparse_priors(self,
                      prior_idxs: Tensor,
                      featmap_size: Sequence[int],
                      level_idx: int,
                      dtype: torch.dtype = torch.float32,
                      device='cpu') -> Tensor:
        """``(K, 2)`` points of the level-``level_idx`` cells with flat
        indices ``prior_idxs (K,)`` (long, ``i * W + j``)."""
        height, width = int(featmap_size[0]), int(featmap_size[1])
        stride_w, stride_h = self._strides[level_idx]
        x = (prior_idxs % width + self.offset) * stride_w
        y = ((prior_idxs // width) % height + self.offset) * stride_h
        return torch.stack([x, y], 1).to(dtype).to(device)

    # --------------------------------------------------------- valid flags
    def valid_flags(self,
                    featmap_sizes: Sequence[Sequence[int]],
                    pad_shape: Sequence[int],
                    device='cpu') -> List[Tensor]:
        """Per level a bool ``(H * W,)``: True where the point's cell lies
        inside the image's own padded area ``pad_shape = (h, w)``."""
        self._check_levels(featmap_sizes, 'valid_flags')
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
                                              device=device))
        return flags

    @staticmethod
    def single_level_valid_flags(featmap_size: Sequence[int],
                                 valid_size: Sequence[int],
                                 device='cpu') -> Tensor:
        """Bool ``(H * W,)``: cell ``(i, j)`` is valid when ``i < valid_h``
        and ``j < valid_w``."""
        feat_h, feat_w = int(featmap_size[0]), int(featmap_size[1])
        valid_h, valid_w = int(valid_size[0]), int(valid_size[1])
        if valid_h > feat_h or valid_w > feat_w:
            raise ValueError(
                f'MlvlPointGenerator.single_level_valid_flags: valid size '
                f'{(valid_h, valid_w)} exceeds the feature map '
                f'{(feat_h, feat_w)}')
        valid_y = torch.arange(feat_h, device=device) < valid_h
        valid_x = torch.arange(feat_w, device=device) < valid_w
        return (valid_y[:, None] & valid_x[None, :]).reshape(-1)

    def __repr__(self) -> str:
        return (f'MlvlPointGenerator(strides={self._strides}, '
                f'offset={self.offset})')
