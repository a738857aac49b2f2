"""Batches of images of the same orientation, to waste less padding.

A landscape and a portrait image in one batch are both padded to the
union of their sizes, nearly doubling the pixels to process.
"""
from typing import Iterator, List

from torch.utils.data import BatchSampler, Sampler

from detkit.registry import DATA_SAMPLERS


@DATA_SAMPLERS.register_module()
class AspectRatioBatchSampler(BatchSampler):
    """Group the indices of ``sampler`` into two buckets, ``w < h``
    (portrait) and ``w >= h`` (landscape or square), using the
    ``width``/``height`` of ``sampler.dataset.get_data_info(idx)``, and
    yield a bucket as soon as it holds ``batch_size`` indices (in the
    sampler's order).

    At the end of the epoch the leftovers (fewer than ``batch_size`` in
    each bucket) are concatenated, portrait first, and yielded in chunks of
    ``batch_size``; a final chunk shorter than ``batch_size`` is dropped
    with ``drop_last``. Only these last one or two batches can mix
    orientations; in exchange ``len()`` is exact:
    ``ceil(n / batch_size)``, or ``n // batch_size`` with ``drop_last``.

    Args:
        sampler: yields dataset indices and has a ``dataset`` attribute
            (mmengine's ``DefaultSampler``, ``InfiniteSampler``).
        batch_size: images per batch.
        drop_last: drop the short last batch.
    """

    def __init__(self,
                 sampler: Sampler,
                 batch_size: int,
                 drop_last: bool = False) -> None:
        if not isinstance(sampler, Sampler):
            raise TypeError('AspectRatioBatchSampler: sampler must be a '
                            f'torch Sampler, got {type(sampler).__name__}')
        if isinstance(batch_size, bool) or not isinstance(
                batch_size, int) or batch_size <= 0:
            raise ValueError('AspectRatioBatchSampler: batch_size must be a '
                             f'positive int, got {batch_size!r}')
        if not hasattr(sampler, 'dataset'):
            raise TypeError(
                f'AspectRatioBatchSampler: {type(sampler).__name__} has no '
                '`dataset` attribute to read image sizes from; use '
                "sampler=dict(type='DefaultSampler')")
        self.sampler = sampler
        self.batch_size = batch_size
        self.drop_last = drop_last
        self._portrait = None

    def _is_portrait(self, idx: int) -> bool:
        # Orientation of every image, computed once: get_data_info
        # unpickles a whole record, too slow to repeat every epoch.
        dataset = self.sampler.dataset
        if self._portrait is None or len(self._portrait) != len(dataset):
            flags = []
            for i in range(len(dataset)):
                info = dataset.get_data_info(i)
                if 'width' not in info or 'height' not in info:
                    raise KeyError(
                        'AspectRatioBatchSampler needs width and height in '
                        f'the data info of dataset index {i} '
                        f'({info.get("img_path", "?")})')
                flags.append(info['width'] < info['height'])
            self._portrait = flags
        return self._portrait[idx]

    def __iter__(self) -> Iterator[List[int]]:
        buckets = ([], [])  # (landscape or square, portrait)
        for idx in self.sampler:
            bucket = buckets[int(self._is_portrait(idx))]
            bucket.append(idx)
            if len(bucket) == self.batch_size:
                yield bucket[:]
                bucket.clear()
        left = buckets[1] + buckets[0]
        for start in range(0, len(left), self.batch_size):
            batch = left[start:start + self.batch_size]
            if len(batch) == self.batch_size or not self.drop_last:
                yield batch

    def __len__(self) -> int:
        if self.drop_last:
            return len(self.sampler) // self.batch_size
        return (len(self.sampler) + self.batch_size - 1) // self.batch_size
