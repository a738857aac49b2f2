"""A tiny real detector run for the reliability tests, and test-only hooks.

:func:`tiny_cfg` is the quick-start RetinaNet (configs/quickstart) shrunk to
a few thousand parameters, training on 8 synthetic 64x64 shape images
(4 iterations per epoch) and validating on 4. Subprocesses (tools/train.py)
import this module through ``custom_imports`` to get the hooks; the tests
put this folder on ``PYTHONPATH`` for them.
"""
import json
import os
import os.path as osp
import signal
import sys
import uuid

import numpy as np
import pytest
import torch
from mmengine.config import Config
from mmengine.evaluator import BaseMetric
from mmengine.hooks import Hook
from mmengine.model import BaseModel
from torch.utils.data import Dataset

from detkit.datasets.synthetic_shapes import generate_shapes_dataset
from detkit.registry import DATASETS, HOOKS, METRICS, MODELS

HERE = osp.dirname(osp.abspath(__file__))
REPO_ROOT = osp.dirname(osp.dirname(HERE))
QUICKSTART = osp.join(REPO_ROOT, 'configs', 'quickstart',
                      'retinanet_r18_fpn_shapes.py')
TRAIN_TOOL = osp.join(REPO_ROOT, 'tools', 'train.py')
TEST_TOOL = osp.join(REPO_ROOT, 'tools', 'test.py')


@pytest.fixture
def one_thread():
    """Run torch on one thread during the test: the tiny model gains
    nothing from more, and on a busy 2-core machine threads that wait for
    each other make a training step many times slower."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def make_shapes(root, num_train=8, num_val=4):
    """The synthetic shapes dataset, 64x64 images, 1 to 3 shapes each."""
    return generate_shapes_dataset(
        str(root), num_train=num_train, num_val=num_val, img_size=64,
        min_obj_size=8, max_objects=3)['data_root']


def tiny_cfg(data_root, work_dir, **overrides):
    """The quick-start config at 64x64 with 8-channel ResNet-18 stages,
    16-channel FPN and a one-conv head; batch 2, no workers, checkpoint and
    validation every epoch, seed 0. ``overrides`` are merged last (dotted
    keys allowed)."""
    cfg = Config.fromfile(QUICKSTART)
    data_root = data_root.rstrip('/') + '/'
    scale = (64, 64)
    train_pipeline = [
        dict(type='LoadImageFromFile'),
        dict(type='LoadAnnotations', with_bbox=True),
        dict(type='Resize', scale=scale, keep_ratio=True),
        dict(type='RandomFlip', prob=0.5),
        dict(type='PackDetInputs')
    ]
    test_pipeline = [
        dict(type='LoadImageFromFile'),
        dict(type='Resize', scale=scale, keep_ratio=True),
        dict(type='LoadAnnotations', with_bbox=True),
        dict(type='PackDetInputs',
             meta_keys=('img_id', 'img_path', 'ori_shape', 'img_shape',
                        'scale_factor'))
    ]
    loader = dict(batch_size=2, num_workers=0, persistent_workers=False)
    cfg.merge_from_dict(dict(
        model=dict(
            backbone=dict(base_channels=8),
            neck=dict(in_channels=[16, 32, 64], out_channels=16),
            bbox_head=dict(in_channels=16, feat_channels=16, stacked_convs=1,
                           norm_cfg=dict(num_groups=4)),
            # Keep every box: a young model's AP and AR are then not 0.
            test_cfg=dict(score_thr=0.0)),
        train_dataloader=dict(
            dataset=dict(data_root=data_root, pipeline=train_pipeline),
            **loader),
        val_dataloader=dict(
            dataset=dict(data_root=data_root, pipeline=test_pipeline),
            **loader),
        test_dataloader=dict(
            dataset=dict(data_root=data_root, pipeline=test_pipeline),
            **loader),
        val_evaluator=dict(ann_file=data_root + 'annotations/val.json',
                           metric=['bbox', 'proposal_fast']),
        test_evaluator=dict(ann_file=data_root + 'annotations/val.json',
                            metric=['bbox', 'proposal_fast']),
        train_cfg=dict(max_epochs=2, val_interval=1),
        default_hooks=dict(
            logger=dict(interval=1),
            checkpoint=dict(interval=1, max_keep_ckpts=-1, save_best=None)),
        work_dir=str(work_dir),
        # Runners built in one second would share a MessageHub otherwise.
        experiment_name=f'reliab_{uuid.uuid4().hex[:8]}',
    ))
    cfg.merge_from_dict(overrides)
    return cfg


def dump_for_subprocess(cfg, path):
    """Write ``cfg`` to ``path`` so that tools/train.py in a subprocess
    (with :func:`subprocess_env`) finds this module's hooks."""
    cfg.custom_imports = dict(imports=['reliability_toys'],
                              allow_failed_imports=False)
    cfg.pop('experiment_name', None)
    cfg.dump(str(path))
    return str(path)


def subprocess_env():
    """One thread (tests run side by side on 2 cores), this folder
    importable."""
    env = dict(os.environ, OMP_NUM_THREADS='1', MKL_NUM_THREADS='1')
    env['PYTHONPATH'] = os.pathsep.join(
        [HERE, REPO_ROOT] + [p for p in [env.get('PYTHONPATH')] if p])
    return env


def read_jsonl(path):
    with open(path) as f:
        return [json.loads(line) for line in f]


@HOOKS.register_module(name='_KillAtIterHook', force=True)
class KillAtIterHook(Hook):
    """SIGKILL this process right after training iteration ``iteration``
    (1-based, counted over the whole run): a crash with no clean-up."""

    priority = 'LOWEST'

    def __init__(self, iteration):
        self.iteration = iteration

    def after_train_iter(self, runner, batch_idx, data_batch=None,
                         outputs=None):
        if runner.iter + 1 == self.iteration:
            sys.stdout.flush()
            os.kill(os.getpid(), signal.SIGKILL)


@HOOKS.register_module(name='_RecordHook', force=True)
class RecordHook(Hook):
    """Append to ``<work_dir>/batches.jsonl`` the iteration, image ids and
    flips of every training batch, and to ``metrics.jsonl`` every
    validation result."""

    def before_train_iter(self, runner, batch_idx, data_batch=None):
        samples = data_batch['data_samples']
        self._write(runner, 'batches.jsonl', dict(
            iter=runner.iter,
            ids=[s.img_id for s in samples],
            flips=[bool(s.metainfo.get('flip')) for s in samples]))

    def after_val_epoch(self, runner, metrics=None):
        self._write(runner, 'metrics.jsonl', dict(
            epoch=runner.epoch,
            metrics={k: float(v) for k, v in (metrics or {}).items()}))

    @staticmethod
    def _write(runner, name, record):
        with open(osp.join(runner.work_dir, name), 'a') as f:
            f.write(json.dumps(record) + '\n')


@HOOKS.register_module(name='_NaNAtIterHook', force=True)
class NaNAtIterHook(Hook):
    """Make the box regression output NaN during training iteration
    ``iteration`` (1-based) only: one bad step in an otherwise healthy run.
    """

    def __init__(self, iteration):
        self.iteration = iteration
        self._handle = None

    def before_train_iter(self, runner, batch_idx, data_batch=None):
        if runner.iter + 1 == self.iteration:
            model = getattr(runner.model, 'module', runner.model)
            self._handle = model.bbox_head.retina_reg.register_forward_hook(
                lambda module, inputs, output: output + float('nan'))

    def after_train_iter(self, runner, batch_idx, data_batch=None,
                         outputs=None):
        if self._handle is not None:
            self._handle.remove()
            self._handle = None


def state_dict_of(path):
    return torch.load(path, weights_only=True)['state_dict']


@MODELS.register_module(name='_ReliabToyModel', force=True)
class ToyModel(BaseModel):
    """``Linear(4, 2)`` with a mean squared error."""

    def __init__(self, data_preprocessor=None):
        super().__init__(data_preprocessor=data_preprocessor)
        self.linear = torch.nn.Linear(4, 2)

    def forward(self, inputs, data_samples=None, mode='tensor'):
        out = self.linear(inputs)
        if mode == 'loss':
            return dict(loss=((out - data_samples)**2).mean())
        if mode == 'predict':
            return list(out)
        return out


@DATASETS.register_module(name='_ReliabToyDataset', force=True)
class ToyDataset(Dataset):
    """8 fixed pairs whose inputs get numpy noise when fetched (an
    augmentation)."""

    metainfo = dict(classes=('a', 'b'))

    def __init__(self):
        gen = torch.Generator().manual_seed(0)
        self.inputs = torch.randn(8, 4, generator=gen)
        self.targets = torch.randn(8, 2, generator=gen)

    def __len__(self):
        return 8

    def __getitem__(self, idx):
        noise = torch.from_numpy(np.random.randn(4).astype(np.float32))
        return dict(inputs=self.inputs[idx] + noise,
                    data_samples=self.targets[idx])


@HOOKS.register_module(name='_RecordInputsHook', force=True)
class RecordInputsHook(Hook):
    """Keep the inputs of every training batch in ``self.inputs`` and the
    training sampler's seed at the start in ``self.sampler_seed``."""

    def before_train(self, runner):
        self.inputs = []
        sampler = runner.train_dataloader.batch_sampler.sampler
        self.sampler_seed = sampler.seed

    def before_train_iter(self, runner, batch_idx, data_batch=None):
        self.inputs.append(data_batch['inputs'].clone())


@METRICS.register_module(name='_ReliabToyMetric', force=True)
class ToyMetric(BaseMetric):
    """``toy/mean``: the mean of all predictions."""

    default_prefix = 'toy'

    def process(self, data_batch, data_samples):
        self.results.extend(float(s.mean()) for s in data_samples)

    def compute_metrics(self, results):
        return dict(mean=sum(results) / len(results))


def toy_runner_cfg(work_dir, **overrides):
    """A DetRunner config for :class:`ToyModel`: SGD, 4 iterations per
    epoch, 2 epochs, a checkpoint every epoch."""
    cfg = dict(
        default_scope='detkit',
        model=dict(type='_ReliabToyModel'),
        work_dir=str(work_dir),
        train_dataloader=dict(
            batch_size=2, num_workers=0,
            dataset=dict(type='_ReliabToyDataset'),
            sampler=dict(type='DefaultSampler', shuffle=True),
            collate_fn=dict(type='default_collate')),
        train_cfg=dict(by_epoch=True, max_epochs=2),
        optim_wrapper=dict(optimizer=dict(type='SGD', lr=0.1,
                                          momentum=0.9)),
        default_hooks=dict(checkpoint=dict(type='CheckpointHook',
                                           interval=1)),
        test_dataloader=dict(
            batch_size=4, num_workers=0,
            dataset=dict(type='_ReliabToyDataset'),
            sampler=dict(type='DefaultSampler', shuffle=False),
            collate_fn=dict(type='default_collate')),
        test_cfg=dict(type='TestLoop'),
        test_evaluator=dict(type='_ReliabToyMetric'),
        custom_hooks=[dict(type='_RecordInputsHook')],
        log_level='WARNING',
        experiment_name=f'reliab_toy_{uuid.uuid4().hex[:8]}')
    cfg.update(overrides)
    return cfg

