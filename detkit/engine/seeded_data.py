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

When a resume switches the run to the checkpoint's seed (a config without
a seed), :func:`follow_resumed_seed` hands it to the sampler, built before.

Iteration-based training (``InfiniteSampler``) gets per-sample seeds from
the position in the infinite stream, which mmengine replays on resume; the
main process is reseeded only when the stream starts, so randomness in the
model (not in the data) may differ after a mid-stream resume.
"""
import random

import numpy as np
import torch
from mmengine.dist import get_rank
from mmengine.registry import DATA_SAMPLERS, DATASETS
from torch.utils.data import Sampler


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


def seed_train_dataloader_cfg(dataloader_cfg):
    """The training dataloader config with its dataset wrapped in
    :class:`SeededDataset` and its sampler in :class:`SeededSampler`.

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
    return cfg


def follow_resumed_seed(dataloader, seed) -> None:
    """Give the training sampler the seed a resume restored.

    The sampler is built (with the run's seed) before the checkpoint is
    read; when the config sets no seed, mmengine's ``resume`` then
    switches the run to the checkpoint's seed, and the data must follow
    or the resumed epochs see another order and other augmentations.
    """
    samplers = [getattr(dataloader, 'sampler', None),
                getattr(getattr(dataloader, 'batch_sampler', None),
                        'sampler', None)]
    for sampler in samplers:
        if isinstance(sampler, SeededSampler) and sampler.seed != seed:
            sampler.seed = seed
            if getattr(sampler.sampler, 'seed', None) is not None:
                sampler.sampler.seed = seed

