"""Data randomness that a resumed run reproduces exactly.

mmengine seeds the global RNGs once per process: the main process at start,
each DataLoader worker when it starts (``seed + worker_id``). Augmentation
(``RandomFlip`` draws from numpy's global RNG) then continues one stream
across epochs, and a run resumed from the end of epoch ``e`` starts a fresh
stream instead: with ``num_workers=0`` or ``persistent_workers=True`` the
flips of epoch ``e + 1`` differ from the uninterrupted run's, so the
parameters do too. (Non-persistent workers repeat the same stream every
epoch, which is reproducible but the same at every epoch.)

detkit makes every random draw of a training epoch a function of
``(seed, epoch, rank)`` and the position in that epoch, whatever happened
before it and wherever it runs. :class:`DetRunner` wraps the training
dataloader's config (see :func:`seed_train_dataloader_cfg`):

- :class:`SeededSampler` wraps the configured sampler (same order) and
  yields each index as a :class:`SeededIndex` carrying
  ``seed_of(seed, rank, epoch, 1, k)`` for the k-th sample of the pass.
  Starting a pass (in the main process, before the epoch's first batch)
  also reseeds the main process from ``seed_of(seed, rank, epoch, 0)``, so
  randomness in the model (``RandomSampler``, dropout) restarts identically
  after a resume too.
- :class:`SeededDataset` wraps the configured dataset: before fetching a
  :class:`SeededIndex` it seeds python's ``random``, numpy's global RNG and
  torch's CPU generator with the index's seed, in whichever process
  (main or worker, persistent or not) the fetch runs. Every other attribute
  is the wrapped dataset's.

- :class:`ResumableBatchSampler` wraps the batch sampler (the configured
  one, or the ``BatchSampler`` torch would make from ``batch_size`` and
  ``drop_last``) so that a run resumed inside an epoch can skip the
  epoch's first batches without loading them (see :mod:`.loops`).
- :func:`iteration_seed` gives the seed the training loops reseed the main
  process with before every iteration, so randomness in the model does
  not depend on where a run was resumed.

When a resume switches the run to the checkpoint's seed (a config without
a seed), :func:`follow_resumed_seed` hands it to the sampler, built before.

Iteration-based training (``InfiniteSampler``) gets per-sample seeds from
the position in the infinite stream, which mmengine replays on resume.
"""
import random

import numpy as np
import torch
from mmengine.dist import get_rank
from mmengine.registry import DATA_SAMPLERS, DATASETS
from torch.utils.data import BatchSampler, Sampler


def seed_of(*words) -> int:
    """A 32-bit seed hashed from non-negative ints (numpy's SeedSequence:
    nearby inputs give unrelated seeds)."""
    entropy = [int(w) & 0xFFFFFFFFFFFFFFFF for w in words]
    return int(np.random.SeedSequence(entropy).generate_state(1)[0])


def seed_rngs(seed: int, all_devices: bool = False) -> None:
    """Seed python's ``random``, numpy's global RNG and torch's CPU
    generator (every device's with ``all_devices``)."""
    random.seed(seed)
    np.random.seed(seed)
    if all_devices:
        torch.manual_seed(seed)
    else:
        torch.default_generator.manual_seed(seed)


class SeededIndex(int):
    """A dataset index that carries the ``seed`` its sample is drawn with.

    It is an ``int`` for everything else (batch samplers, list indexing),
    and pickles as ``(index, seed)`` to DataLoader workers.
    """

    def __new__(cls, index: int, seed: int):
        obj = super().__new__(cls, index)
        obj.seed = seed
        return obj

    def __reduce__(self):
        return SeededIndex, (int(self), self.seed)

    def __repr__(self):
        return f'SeededIndex({int(self)}, seed={self.seed})'


class SeededSampler(Sampler):
    """Yield the indices of ``sampler`` as :class:`SeededIndex`.

    Args:
        sampler (dict | Sampler): the sampler config (built with the
            ``dataset`` and ``seed`` mmengine passes) or a sampler.
        dataset: the dataset (mmengine passes it).
        seed (int, optional): the run's seed (mmengine passes it). The
            wrapped sampler's own ``seed`` takes precedence; with neither,
            indices are yielded unchanged.
    """

    def __init__(self, sampler, dataset=None, seed=None):
        if isinstance(sampler, dict):
            sampler = DATA_SAMPLERS.build(
                sampler, default_args=dict(dataset=dataset, seed=seed))
        self.sampler = sampler
        self.dataset = getattr(sampler, 'dataset', dataset)
        own_seed = getattr(sampler, 'seed', None)
        self.seed = own_seed if own_seed is not None else seed
        self.rank = getattr(sampler, 'rank', None)
        if self.rank is None:
            self.rank = get_rank()

    @property
    def epoch(self) -> int:
        return getattr(self.sampler, 'epoch', 0)

    def set_epoch(self, epoch: int) -> None:
        if hasattr(self.sampler, 'set_epoch'):
            self.sampler.set_epoch(epoch)

    def __len__(self) -> int:
        return len(self.sampler)

    def __iter__(self):
        if self.seed is None:
            yield from self.sampler
            return
        epoch = self.epoch
        seed_rngs(seed_of(self.seed, self.rank, epoch, 0), all_devices=True)
        for k, index in enumerate(self.sampler):
            yield SeededIndex(index, seed_of(self.seed, self.rank, epoch, 1,
                                             k))


class SeededDataset:
    """``dataset`` whose samples are fetched with their index's seed.

    Args:
        dataset (dict | Dataset): the dataset config (built as mmengine
            builds one) or a dataset.
    """

    def __init__(self, dataset):
        if isinstance(dataset, dict):
            dataset = DATASETS.build(dataset)
        self.dataset = dataset

    def full_init(self) -> None:
        if hasattr(self.dataset, 'full_init'):
            self.dataset.full_init()

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, idx):
        seed = getattr(idx, 'seed', None)
        if seed is not None:
            seed_rngs(seed)
            idx = int(idx)
        return self.dataset[idx]

    def __getattr__(self, name):
        # Called only for names this wrapper lacks: metainfo,
        # get_data_info, report_broken, ... are the dataset's. 'dataset'
        # itself is missing only while unpickling (in a worker).
        if name == 'dataset':
            raise AttributeError(name)
        return getattr(self.dataset, name)

    def __repr__(self):
        return f'SeededDataset({self.dataset!r})'


class ResumableBatchSampler:
    """A batch sampler whose next pass can start after its first batches.

    Args:
        sampler: the index sampler (mmengine passes it).
        batch_size (int): mmengine passes the dataloader's.
        batch_sampler (dict, optional): the configured batch sampler (built
            with ``sampler`` and ``batch_size``); None: torch's
            ``BatchSampler(sampler, batch_size, drop_last)``, what the
            DataLoader would have made.
        drop_last (bool): the dataloader's ``drop_last``.
    """

    def __init__(self, sampler, batch_size, batch_sampler=None,
                 drop_last=False):
        if batch_sampler is None:
            batch_sampler = BatchSampler(sampler, batch_size, drop_last)
        elif isinstance(batch_sampler, dict):
            batch_sampler = DATA_SAMPLERS.build(
                batch_sampler,
                default_args=dict(sampler=sampler, batch_size=batch_size))
        self.batch_sampler = batch_sampler
        self.sampler = sampler  # where mmengine looks for set_epoch
        self._skip = 0

    def skip_next_epoch(self, num_batches: int) -> None:
        """Leave out the first ``num_batches`` of the next pass only."""
        self._skip = int(num_batches)

    def __len__(self) -> int:
        return len(self.batch_sampler)

    def __iter__(self):
        skip, self._skip = self._skip, 0
        # Drawing the skipped batches' indices (not their data) keeps the
        # sampler's order, its epoch-start reseed and any grouping of the
        # batch sampler exactly as in the uninterrupted pass.
        batches = iter(self.batch_sampler)
        for k in range(skip):
            if next(batches, None) is None:
                raise RuntimeError(
                    f'Cannot skip {skip} batches to resume inside the '
                    f'epoch: the epoch has only {k}.')
        yield from batches


def _seeded_sampler(dataloader):
    batch_sampler = getattr(dataloader, 'batch_sampler', None)
    for sampler in (getattr(dataloader, 'sampler', None),
                    getattr(batch_sampler, 'sampler', None)):
        if isinstance(sampler, SeededSampler):
            return sampler
    return None


def iteration_seed(dataloader, iteration):
    """The seed of training iteration ``iteration`` (counted over the run)
    for the main process, from the seed and rank of ``dataloader``'s
    :class:`SeededSampler`; None when its data is not seeded."""
    sampler = _seeded_sampler(dataloader)
    if sampler is None or sampler.seed is None:
        return None
    return seed_of(sampler.seed, sampler.rank, iteration, 2)


def seed_train_dataloader_cfg(dataloader_cfg):
    """The training dataloader config with its dataset wrapped in
    :class:`SeededDataset`, its sampler in :class:`SeededSampler` and its
    batch sampler in :class:`ResumableBatchSampler`.

    A built DataLoader, or a config already wrapped, is returned as is.
    """
    if not isinstance(dataloader_cfg, dict) or 'sampler' not in \
            dataloader_cfg:
        return dataloader_cfg
    sampler = dataloader_cfg['sampler']
    if isinstance(sampler, SeededSampler) or (
            isinstance(sampler, dict)
            and sampler.get('type') is SeededSampler):
        return dataloader_cfg
    cfg = dict(dataloader_cfg)
    cfg['dataset'] = dict(type=SeededDataset, dataset=cfg['dataset'])
    cfg['sampler'] = dict(type=SeededSampler, sampler=sampler)
    cfg['batch_sampler'] = dict(
        type=ResumableBatchSampler,
        batch_sampler=cfg.get('batch_sampler'),
        drop_last=cfg.pop('drop_last', False))
    return cfg


def follow_resumed_seed(dataloader, seed) -> None:
    """Give the training sampler the seed a resume restored.

    The sampler is built (with the run's seed) before the checkpoint is
    read; when the config sets no seed, mmengine's ``resume`` then
    switches the run to the checkpoint's seed, and the data must follow
    or the resumed epochs see another order and other augmentations.
    """
    sampler = _seeded_sampler(dataloader)
    if sampler is not None and sampler.seed != seed:
        sampler.seed = seed
        if getattr(sampler.sampler, 'seed', None) is not None:
            sampler.sampler.seed = seed

