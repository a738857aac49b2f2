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


def toy_val_parts():
    """Config keys that give the toy runner a validation after every
    epoch (two batches of 4)."""
    parts = toy_test_parts()
    return dict(val_dataloader=parts['test_dataloader'],
                val_cfg=dict(type='ValLoop'),
                val_evaluator=parts['test_evaluator'])


def _die():
    """SIGKILL this process: a crash with no clean-up at all."""
    import signal
    import sys
    sys.stdout.flush()
    sys.stderr.flush()
    os.kill(os.getpid(), signal.SIGKILL)


@HOOKS.register_module(name='_KillAtHook', force=True)
class KillAtHook(Hook):
    """SIGKILL this process (on ``rank``) at a named point of the run:

    - ``'train_iter'``: after training iteration ``at`` (1-based, counted
      over the run) and the hooks of that iteration;
    - ``'pointer'``: after the ``at``-th checkpoint file is complete, just
      before ``last_checkpoint`` is updated to name it;
    - ``'write'``: in the middle of the ``at``-th checkpoint write (half
      of its bytes are in the temporary file);
    - ``'val_iter'``: after batch 1 of the ``at``-th validation.
    """

    priority = 'HIGHEST'

    def __init__(self, point, at, rank=0):
        assert point in ('train_iter', 'pointer', 'write', 'val_iter')
        self.point, self.at, self.rank = point, at, rank
        self.count = 0

    def before_run(self, runner):
        if runner.rank != self.rank:
            self.point = None
        elif self.point == 'pointer':
            from detkit.engine.hooks import checkpoint_hook
            real = checkpoint_hook.atomic_write

            def atomic_write(path, write):
                if os.path.basename(str(path)) == 'last_checkpoint':
                    self.count += 1
                    if self.count == self.at:
                        _die()
                return real(path, write)

            checkpoint_hook.atomic_write = atomic_write
        elif self.point == 'write':
            real_save = torch.save

            def save(obj, f, *args, **kwargs):
                self.count += 1
                if self.count == self.at:
                    import io
                    buffer = io.BytesIO()
                    real_save(obj, buffer, *args, **kwargs)
                    data = buffer.getvalue()
                    f.write(data[:len(data) // 2])
                    f.flush()
                    _die()
                return real_save(obj, f, *args, **kwargs)

            torch.save = save

    def after_train_iter(self, runner, batch_idx, data_batch=None,
                         outputs=None):
        if self.point == 'train_iter' and runner.iter + 1 == self.at:
            _die()

    def before_val_epoch(self, runner):
        self.count += self.point == 'val_iter'

    def after_val_iter(self, runner, batch_idx, data_batch=None,
                       outputs=None):
        if (self.point == 'val_iter' and self.count == self.at
                and batch_idx == 0):
            _die()


@HOOKS.register_module(name='_SignalAtHook', force=True)
class SignalAtHook(Hook):
    """Send ``signal`` (a name, e.g. ``'SIGTERM'``) to this process after
    training iteration ``at`` (1-based) on ``rank``, as a user's Ctrl-C or
    Slurm would; ``sleep`` seconds after every iteration from then on
    (time for a signal sent from outside to arrive). ``ready_file``: the
    first process to pass iteration ``at`` creates it (so a test knows
    training runs); ``hold_file``: after iteration ``at``, wait (at most a
    minute) until that file is gone."""

    priority = 'NORMAL'

    def __init__(self, signal=None, at=1, rank=0, sleep=0.0,
                 ready_file=None, hold_file=None):
        self.signal, self.at, self.rank = signal, at, rank
        self.sleep, self.ready_file = sleep, ready_file
        self.hold_file = hold_file

    def after_train_iter(self, runner, batch_idx, data_batch=None,
                         outputs=None):
        import signal
        import time
        if runner.iter + 1 < self.at:
            return
        if runner.iter + 1 == self.at:
            if self.ready_file and runner.rank == 0:
                open(self.ready_file, 'w').close()
            if self.signal and runner.rank == self.rank:
                os.kill(os.getpid(), getattr(signal, self.signal))
            deadline = time.monotonic() + 60
            while (self.hold_file and os.path.exists(self.hold_file)
                   and time.monotonic() < deadline):
                time.sleep(0.05)
        time.sleep(self.sleep)


@HOOKS.register_module(name='_SignalDuringValHook', force=True)
class SignalDuringValHook(Hook):
    """SIGTERM to this process after the first batch of the first
    validation."""

    def after_val_iter(self, runner, batch_idx, data_batch=None,
                       outputs=None):
        import signal
        if batch_idx == 0:
            os.kill(os.getpid(), signal.SIGTERM)


# ------------------------------------------- tools/train.py in subprocesses
TESTS_DIR = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(os.path.dirname(TESTS_DIR))
# Log keys that measure time, not training.
TIMING_KEYS = ('time', 'data_time', 'eta', 'memory')


def write_toy_config(path, max_epochs=3, **overrides):
    """A config file of :func:`toy_cfg` with a validation every epoch, for
    tools/train.py in a subprocess (which imports this module through
    ``custom_imports``); ``overrides`` replace top-level keys."""
    from mmengine.config import Config
    cfg = dict(toy_cfg('unused', max_epochs=max_epochs), **toy_val_parts())
    for key in ('work_dir', 'experiment_name'):
        cfg.pop(key)
    cfg['custom_imports'] = dict(imports=['engine_toys'],
                                 allow_failed_imports=False)
    cfg.update(overrides)
    Config(cfg).dump(str(path))
    return str(path)


def tool_env():
    """One thread per process, this folder importable."""
    env = dict(os.environ, OMP_NUM_THREADS='1', MKL_NUM_THREADS='1')
    env['PYTHONPATH'] = os.pathsep.join(
        [TESTS_DIR, REPO] + [p for p in [env.get('PYTHONPATH')] if p])
    return env


def start_train(cfg_file, work_dir, *args):
    """``python tools/train.py CFG --work-dir DIR ARGS`` in a subprocess;
    stdout and stderr merged."""
    import subprocess
    import sys
    return subprocess.Popen(
        [sys.executable, os.path.join(REPO, 'tools', 'train.py'),
         str(cfg_file), '--work-dir', str(work_dir), *map(str, args)],
        env=tool_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
        text=True)


def wait_all(procs, timeout=300):
    """Outputs of ``procs`` once all ended; kills them on a timeout."""
    import subprocess
    outs = []
    for proc in procs:
        try:
            out, _ = proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            out, _ = proc.communicate()
            out += '\n[killed: timeout]'
        outs.append(out)
    return outs


def logged_scalars(work_dir):
    """Every line of the ``scalars.json`` files of ``work_dir``'s runs, in
    run order, without the timing keys: ``[[line, ...], ...]``, one list
    per run."""
    import glob
    import json
    runs = []
    for path in sorted(glob.glob(os.path.join(
            str(work_dir), '*', 'vis_data', 'scalars.json'))):
        with open(path) as f:
            runs.append([{k: v for k, v in json.loads(line).items()
                          if k not in TIMING_KEYS} for line in f])
    return runs


def final_state(path):
    """``(state_dict, optimizer state)`` of a checkpoint file."""
    ckpt = torch.load(path, weights_only=True)
    return ckpt['state_dict'], ckpt['optimizer']['state']


def assert_same_state(path_a, path_b):
    """Bitwise equal weights and optimizer state (momentum buffers)."""
    (weights_a, optim_a), (weights_b, optim_b) = (final_state(path_a),
                                                  final_state(path_b))
    assert weights_a.keys() == weights_b.keys()
    for key in weights_a:
        assert torch.equal(weights_a[key], weights_b[key]), key
    assert optim_a.keys() == optim_b.keys()
    for key in optim_a:
        for name, value in optim_a[key].items():
            assert torch.equal(value, optim_b[key][name]), (key, name)


_STRAIGHT_RUN = {}


def straight_toy_run_once(tmp_path_factory):
    """tools/train.py on :func:`write_toy_config` (3 epochs of 4
    iterations, a validation after each), uninterrupted, once per test
    session: the run every interrupted-and-resumed one must equal.
    Returns its work_dir."""
    if 'dir' not in _STRAIGHT_RUN:
        root = tmp_path_factory.mktemp('straight_toy')
        proc = start_train(write_toy_config(root / 'toy.py'), root / 'work')
        out, = wait_all([proc])
        assert proc.returncode == 0, out[-3000:]
        _STRAIGHT_RUN['dir'] = root / 'work'
    return _STRAIGHT_RUN['dir']
