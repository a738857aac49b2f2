"""AspectRatioBatchSampler: grouping by orientation, leftovers, len()."""
import pytest
from mmengine.dataset import DefaultSampler
from torch.utils.data import SequentialSampler

from detkit.datasets import AspectRatioBatchSampler
from detkit.registry import DATA_SAMPLERS


class SizesDataset:
    """Only what the sampler reads: len and width/height per index."""

    def __init__(self, sizes):
        self.sizes = sizes
        self.calls = 0

    def __len__(self):
        return len(self.sizes)

    def get_data_info(self, idx):
        self.calls += 1
        w, h = self.sizes[idx]
        return dict(width=w, height=h)


class OrderSampler(SequentialSampler):
    """Yields a fixed order of indices, with a dataset attribute."""

    def __init__(self, dataset, order):
        super().__init__(dataset)
        self.dataset = dataset
        self.order = order

    def __iter__(self):
        return iter(self.order)

    def __len__(self):
        return len(self.order)


L, P, S = (40, 30), (30, 40), (30, 30)  # landscape, portrait, square


def test_batches_group_orientation_and_leftovers_follow():
    #          0  1  2  3  4  5  6  7  8  9
    sizes = [L, P, S, P, L, P, L, S, P, L]
    ds = SizesDataset(sizes)
    sampler = AspectRatioBatchSampler(OrderSampler(ds, range(10)), 3)
    batches = list(sampler)
    # landscape/square: 0 2 4 6 7 9 -> [0, 2, 4] full at index 4,
    # [6, 7, 9] at 9; portrait: 1 3 5 -> full at 5; 8 is left over
    assert batches == [[0, 2, 4], [1, 3, 5], [6, 7, 9], [8]]
    assert len(sampler) == 4
    # the same with drop_last: the short [8] goes
    sampler = AspectRatioBatchSampler(OrderSampler(ds, range(10)), 3,
                                      drop_last=True)
    assert list(sampler) == [[0, 2, 4], [1, 3, 5], [6, 7, 9]]
    assert len(sampler) == 3


def test_leftovers_are_concatenated_portrait_first():
    sizes = [L, P, L, P, L]
    ds = SizesDataset(sizes)
    # batch 4: no bucket fills; leftovers P(1, 3) + L(0, 2, 4)
    batches = list(AspectRatioBatchSampler(OrderSampler(ds, range(5)), 4))
    assert batches == [[1, 3, 0, 2], [4]]
    assert list(
        AspectRatioBatchSampler(OrderSampler(ds, range(5)), 4,
                                drop_last=True)) == [[1, 3, 0, 2]]


def test_shuffled_default_sampler_every_index_once_and_pure_batches():
    sizes = [L if i % 3 else P for i in range(23)]
    ds = SizesDataset(sizes)
    sampler = DATA_SAMPLERS.build(
        dict(type='AspectRatioBatchSampler', batch_size=4),
        default_args=dict(sampler=DefaultSampler(ds, shuffle=True, seed=1)))
    for epoch in range(2):
        sampler.sampler.set_epoch(epoch)
        batches = list(sampler)
        assert len(batches) == len(sampler) == 6  # ceil(23 / 4)
        assert sorted(i for b in batches for i in b) == list(range(23))
        full = [b for b in batches if len(b) == 4]
        # 8 portrait, 15 landscape: 2 + 3 full pure batches, then the
        # leftovers (0 portrait + 3 landscape)
        assert len(full) == 5
        for batch in full:
            assert len({sizes[i] for i in batch}) == 1
    # image sizes are read once, not every epoch
    assert ds.calls == 23


def test_argument_errors():
    ds = SizesDataset([L])
    with pytest.raises(TypeError, match='Sampler'):
        AspectRatioBatchSampler([0], 2)
    with pytest.raises(ValueError, match='batch_size'):
        AspectRatioBatchSampler(OrderSampler(ds, [0]), 0)
    with pytest.raises(TypeError, match='dataset'):
        AspectRatioBatchSampler(SequentialSampler(ds), 2)
