"""Tiny model and dataset for the engine tests, registered under test-only
names so that configs written by the tests (also in torchrun subprocesses,
through ``custom_imports``) can name them."""
import os
import uuid

import torch
from mmengine.evaluator import BaseMetric
from mmengine.hooks import Hook
from mmengine.model import BaseModel
from torch.utils.data import Dataset

from detkit.registry import DATASETS, HOOKS, METRICS, MODELS

TOY_CLASSES = ('cat', 'dog')


@MODELS.register_module(name='_EngineToyModel', force=True)
class EngineToyModel(BaseModel):
    """``y = Linear(4, 2)(x)``, optionally followed by a SyncBatchNorm;
    the loss is the mean squared error."""

    def __init__(self, sync_bn=False, data_preprocessor=None, init_cfg=None):
        super().__init__(data_preprocessor=data_preprocessor,
                         init_cfg=init_cfg)
        self.linear = torch.nn.Linear(4, 2)
        self.norm = torch.nn.SyncBatchNorm(2) if sync_bn else None

    def forward(self, inputs, data_samples=None, mode='tensor'):
        out = self.linear(inputs)
        if self.norm is not None:
            out = self.norm(out)
        if mode == 'loss':
            return dict(loss=((out - data_samples)**2).mean())
        if mode == 'predict':
            return [dict(pred=o) for o in out]
        return out


@DATASETS.register_module(name='_EngineToyDataset', force=True)
class EngineToyDataset(Dataset):
    """``size`` fixed random (input, target) pairs; seeded, so every process
    and every run sees the same data."""

    METAINFO = dict(classes=TOY_CLASSES)

    def __init__(self, size=8, seed=0, broken=''):
        gen = torch.Generator().manual_seed(seed)
        self.inputs = torch.randn(size, 4, generator=gen)
        self.targets = torch.randn(size, 2, generator=gen)
        self.broken = broken

    @property
    def metainfo(self):
        return dict(self.METAINFO)

    def report_broken(self):
        return self.broken

    def __len__(self):
        return len(self.inputs)

    def __getitem__(self, idx):
        return dict(inputs=self.inputs[idx], data_samples=self.targets[idx])


def toy_cfg(work_dir, max_epochs=2, **overrides):
    """A complete runner config: SGD with momentum, LinearLR warm-up over 6
    iterations, MultiStepLR x0.1 after epoch 1; 4 iterations per epoch."""
    cfg = dict(
        default_scope='detkit',
        model=dict(type='_EngineToyModel'),
        work_dir=str(work_dir),
        train_dataloader=dict(
            batch_size=2,
            num_workers=0,
            dataset=dict(type='_EngineToyDataset', size=8),
            sampler=dict(type='DefaultSampler', shuffle=True, seed=0),
            collate_fn=dict(type='default_collate')),
        train_cfg=dict(by_epoch=True, max_epochs=max_epochs),
        optim_wrapper=dict(
            optimizer=dict(type='SGD', lr=0.1, momentum=0.9,
                           weight_decay=1e-4)),
        param_scheduler=[
            dict(type='LinearLR', start_factor=0.1, by_epoch=False,
                 begin=0, end=6),
            dict(type='MultiStepLR', by_epoch=True, milestones=[1],
                 gamma=0.1),
        ],
        default_hooks=dict(
            checkpoint=dict(type='CheckpointHook', interval=1),
            logger=dict(type='LoggerHook', interval=1)),
        randomness=dict(seed=0),
        env_cfg=dict(dist_cfg=dict(backend='gloo')),
        log_level='WARNING',
        # Runners built in the same second would otherwise share one
        # MessageHub/logger instance (mmengine keys them by this name).
        experiment_name=f'toy_{uuid.uuid4().hex[:8]}',
    )
    cfg.update(overrides)
    return cfg


@HOOKS.register_module(name='_StopAfterEpochHook', force=True)
class StopAfterEpochHook(Hook):
    """Stop training after ``epoch`` epochs, after the checkpoint of that
    epoch is saved: an interrupted run of a longer schedule."""

    priority = 'LOWEST'

    def __init__(self, epoch=1):
        self.epoch = epoch

    def after_train_epoch(self, runner):
        if runner.epoch + 1 >= self.epoch:
            runner.train_loop.stop_training = True


@HOOKS.register_module(name='_RecordResumedStateHook', force=True)
class RecordResumedStateHook(Hook):
    """Copy what a resumed run starts from (``before_train`` runs after
    ``load_or_resume``) into ``self.state``."""

    def before_train(self, runner):
        optimizer = runner.optim_wrapper.optimizer
        self.state = dict(
            epoch=runner.epoch,
            iter=runner.iter,
            lr=optimizer.param_groups[0]['lr'],
            momentum_buffers=[
                optimizer.state[p]['momentum_buffer'].clone()
                for p in runner.model.parameters()
            ],
            scheduler_steps=[s.last_step for s in runner.param_schedulers],
            loss_history=runner.message_hub.get_scalar(
                'train/loss').data[0].copy())


@HOOKS.register_module(name='_ParamSumHook', force=True)
class ParamSumHook(Hook):
    """Each rank writes ``rank<r>.txt`` with the sum of its parameters and
    the world size, after training."""

    def after_run(self, runner):
        total = sum(float(p.detach().sum()) for p in runner.model.parameters())
        path = os.path.join(runner.work_dir, f'rank{runner.rank}.txt')
        with open(path, 'w') as f:
            f.write(f'{total!r} {runner.world_size}')


@METRICS.register_module(name='_ToyMeanMetric', force=True)
class ToyMeanMetric(BaseMetric):
    """``toy/mean``: the mean of all predicted values."""

    default_prefix = 'toy'

    def process(self, data_batch, data_samples):
        self.results.extend(float(s['pred'].mean()) for s in data_samples)

    def compute_metrics(self, results):
        return dict(mean=sum(results) / len(results))


def toy_test_parts():
    """Config keys that give the toy runner a test loop."""
    return dict(
        test_dataloader=dict(
            batch_size=4,
            num_workers=0,
            dataset=dict(type='_EngineToyDataset', size=8),
            sampler=dict(type='DefaultSampler', shuffle=False),
            collate_fn=dict(type='default_collate')),
        test_cfg=dict(type='TestLoop'),
        test_evaluator=dict(type='_ToyMeanMetric'))
