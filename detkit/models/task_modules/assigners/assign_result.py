"""The result of assigning ground truths to priors.

Encoding (mmdetection's): ``gt_inds`` is 0 for a negative prior, -1 for an
ignored one (between the thresholds, ignored by IoF, or an invalid prior)
and ``k >= 1`` for a prior assigned to ground truth ``k - 1``; ``labels``
is that ground truth's label, or -1 where the prior is not positive.

A result is either single-image (``gt_inds (N,)``, ``num_gts`` an int) or
batched (``gt_inds (B, N)``, ``num_gts`` a ``(B,)`` long tensor).
"""
from typing import Optional, Union

import torch
from torch import Tensor


class AssignResult:
    """Per-prior assignment.

    Args:
        num_gts: ground truths considered (int, or ``(B,)`` when batched).
        gt_inds: long ``(N,)`` or ``(B, N)``.
        max_overlaps: float ``(N,)`` or ``(B, N)``; each prior's best IoU
            before low-quality matching.
        labels: long ``(N,)`` or ``(B, N)``.
    """

    def __init__(self, num_gts: Union[int, Tensor], gt_inds: Tensor,
                 max_overlaps: Tensor, labels: Tensor):
        if not gt_inds.shape == max_overlaps.shape == labels.shape:
            raise ValueError(
                'AssignResult: gt_inds, max_overlaps and labels must have the'
                f' same shape, got {tuple(gt_inds.shape)}, '
                f'{tuple(max_overlaps.shape)} and {tuple(labels.shape)}')
        self.num_gts = num_gts
        self.gt_inds = gt_inds
        self.max_overlaps = max_overlaps
        self.labels = labels
        self._extra_properties = {}

    @property
    def is_batched(self) -> bool:
        return self.gt_inds.dim() == 2

    @property
    def num_preds(self) -> int:
        """Priors per image."""
        return self.gt_inds.size(-1)

    def for_image(self, img_idx: int) -> 'AssignResult':
        """The single-image result of image ``img_idx`` of a batch."""
        if not self.is_batched:
            raise ValueError('AssignResult.for_image: this result is '
                             'already single-image')
        return AssignResult(
            int(self.num_gts[img_idx]), self.gt_inds[img_idx],
            self.max_overlaps[img_idx], self.labels[img_idx])

    def add_gt_(self, gt_labels: Tensor,
                gt_valid: Optional[Tensor] = None) -> None:
        """Prepend the ground truths as priors assigned to themselves
        (``RandomSampler(add_gt_as_proposals=True)``): ground truth ``k``
        becomes prior ``k`` with ``gt_ind = k + 1``, IoU 1 and its label.

        Args:
            gt_labels: ``(G,)`` for a single-image result, or ``(B, G)``
                padded labels for a batched one.
            gt_valid: batched only, ``(B, G)`` bool; a padding row becomes
                an ignored prior (``gt_inds = labels = -1``,
                ``max_overlaps = -1``), so the candidates of an image are
                ``[its G_i ground truths ; padding ; its priors]``.
        """
        if gt_labels.dim() != self.gt_inds.dim():
            raise ValueError(
                f'AssignResult.add_gt_: gt_labels of shape '
                f'{tuple(gt_labels.shape)} do not fit a result with gt_inds '
                f'of shape {tuple(self.gt_inds.shape)}')
        num = gt_labels.size(-1)
        self_inds = torch.arange(
            1, num + 1, dtype=torch.long,
            device=gt_labels.device).expand_as(gt_labels)
        overlaps = self.max_overlaps.new_ones(gt_labels.shape)
        labels = gt_labels.to(self.labels)
        if gt_valid is not None:
            self_inds = self_inds.masked_fill(~gt_valid, -1)
            overlaps = overlaps.masked_fill(~gt_valid, -1)
            labels = labels.masked_fill(~gt_valid, -1)
        self.gt_inds = torch.cat([self_inds, self.gt_inds], -1)
        self.max_overlaps = torch.cat([overlaps, self.max_overlaps], -1)
        self.labels = torch.cat([labels, self.labels], -1)

    def set_extra_property(self, key: str, value) -> None:
        if key in ('num_gts', 'gt_inds', 'max_overlaps', 'labels'):
            raise KeyError(f'AssignResult: {key!r} is a basic field, not an '
                           'extra property')
        self._extra_properties[key] = value

    def get_extra_property(self, key: str):
        return self._extra_properties.get(key, None)

    @property
    def info(self) -> dict:
        return dict(
            num_gts=self.num_gts,
            num_preds=self.num_preds,
            gt_inds=self.gt_inds,
            max_overlaps=self.max_overlaps,
            labels=self.labels,
            **self._extra_properties)

    def __repr__(self) -> str:
        shape = tuple(self.gt_inds.shape)
        counts = (f'pos={int((self.gt_inds > 0).sum())}, '
                  f'neg={int((self.gt_inds == 0).sum())}, '
                  f'ignore={int((self.gt_inds < 0).sum())}')
        num_gts = (self.num_gts.tolist()
                   if isinstance(self.num_gts, Tensor) else self.num_gts)
        return f'AssignResult(shape={shape}, num_gts={num_gts}, {counts})'
