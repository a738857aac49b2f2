"""detkit.datasets.workers and DetRunner.build_dataloader: OpenCV runs
single-threaded in every worker after mmengine's seeding, pin_memory only
with CUDA, and the seeded training data are the same with workers as
without."""
import copy
import functools
import os.path as osp
import sys

import cv2
import numpy as np
import torch
from mmengine.dataset.utils import worker_init_fn as mmengine_worker_init
from mmengine.registry import DefaultScope
from torch.utils.data import DataLoader, Dataset

from detkit.datasets.workers import (WorkerInit, resolve_pin_memory,
                                     with_worker_init)
from detkit.engine import DetRunner
from detkit.engine.seeded_data import seed_train_dataloader_cfg

sys.path.insert(0, osp.join(osp.dirname(osp.dirname(osp.abspath(__file__))),
                            'test_tools'))
from toolbox_toys import tiny_setup  # noqa: E402,F401


class _WhatTheWorkerSees(Dataset):

    def __len__(self):
        return 2

    def __getitem__(self, idx):
        info = torch.utils.data.get_worker_info()
        return (cv2.getNumThreads(), info.id, int(np.random.randint(1 << 30)))


def test_worker_init_makes_opencv_single_threaded_then_seeds():
    previous = cv2.getNumThreads()
    cv2.setNumThreads(3)  # forked workers would inherit 3
    try:
        seeding = functools.partial(mmengine_worker_init, num_workers=2,
                                    rank=0, seed=5)
        loader = DataLoader(_WhatTheWorkerSees(), batch_size=None,
                            num_workers=2, worker_init_fn=WorkerInit(seeding))
        seen = sorted(loader, key=lambda item: item[1])
    finally:
        cv2.setNumThreads(previous)
    for threads, worker, draw in seen:
        assert threads == 1  # setNumThreads(0): no OpenCV thread pool
        np.random.seed(5 + worker)  # mmengine's seed: seed + worker id
        assert draw == np.random.randint(1 << 30)
    assert [item[1] for item in seen] == [0, 1]


def test_pin_memory_only_with_cuda(monkeypatch):
    for cuda in (False, True):
        monkeypatch.setattr(torch.cuda, 'is_available', lambda: cuda)
        assert resolve_pin_memory(dict(batch_size=2))['pin_memory'] is cuda
        assert resolve_pin_memory(dict(pin_memory=True))['pin_memory'] is \
            cuda
        assert resolve_pin_memory(dict(pin_memory=False))['pin_memory'] is \
            False


def _train_loader(setup, num_workers, persistent=False):
    loader = copy.deepcopy(setup['cfg']['train_dataloader'])
    loader['sampler'] = dict(type='DefaultSampler', shuffle=True)
    loader['dataset']['pipeline'].insert(
        -1, dict(type='RandomFlip', prob=0.5))
    loader.update(num_workers=num_workers, persistent_workers=persistent,
                  pin_memory=True)
    with DefaultScope.overwrite_default_scope('detkit'):
        return DetRunner.build_dataloader(
            seed_train_dataloader_cfg(loader), seed=7)


def test_runner_loaders_with_workers_give_the_same_seeded_batches(
        tiny_setup):  # noqa: F811
    plain = _train_loader(tiny_setup, 0)
    assert not isinstance(plain.worker_init_fn, WorkerInit)  # no workers
    assert plain.pin_memory is torch.cuda.is_available()
    workers = _train_loader(tiny_setup, 2, persistent=True)
    assert isinstance(workers.worker_init_fn, WorkerInit)
    assert workers.worker_init_fn.inner.func is mmengine_worker_init
    assert with_worker_init(workers).worker_init_fn.inner.func is \
        mmengine_worker_init  # wrapped once
    flips = set()
    for epoch in range(2):
        for loader in (plain, workers):
            loader.batch_sampler.sampler.set_epoch(epoch)
        for a, b in zip(plain, workers, strict=True):
            for img_a, img_b in zip(a['inputs'], b['inputs']):
                assert torch.equal(img_a, img_b)
            for sa, sb in zip(a['data_samples'], b['data_samples']):
                assert sa.img_path == sb.img_path and sa.flip == sb.flip
                assert torch.equal(sa.gt_instances.bboxes,
                                   sb.gt_instances.bboxes)
                flips.add(sa.flip)
    assert flips == {True, False}  # the augmentation did draw
