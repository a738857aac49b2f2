"""Shared by the distributed tests (``test_dist_*.py``); holds no tests.

A tiny RetinaNet (the quick-start config shrunk) on generated shapes data,
hooks that record what each rank saw, and helpers that run the launcher
scripts. torchrun workers import this module through the config's
``custom_imports``, so it imports nothing from pytest.
"""
import hashlib
import json
import os
import os.path as osp
import signal
import socket
import subprocess
import sys
import time

from mmengine.hooks import Hook

from detkit.registry import HOOKS

TESTS_DIR = osp.dirname(osp.abspath(__file__))
REPO_ROOT = osp.dirname(osp.dirname(TESTS_DIR))
QUICKSTART = osp.join(REPO_ROOT, 'configs', 'quickstart',
                      'retinanet_r18_fpn_shapes.py')


def free_port():
    with socket.socket() as sock:
        sock.bind(('127.0.0.1', 0))
        return sock.getsockname()[1]


def make_shapes_data(root, num_train=8, num_val=5):
    """64x64 shapes images under ``root``; training images at odd positions
    lose their boxes, so that with ``shuffle=False`` rank 1 of 2 (which gets
    indices 1, 3, 5, ...) only ever sees images without ground truth."""
    from detkit.datasets.synthetic_shapes import generate_shapes_dataset
    paths = generate_shapes_dataset(
        str(root), num_train=num_train, num_val=num_val, img_size=64,
        max_objects=2)
    with open(paths['train_ann_file']) as f:
        coco = json.load(f)
    empty = {img['id'] for img in coco['images'][1::2]}
    coco['annotations'] = [
        a for a in coco['annotations'] if a['image_id'] not in empty
    ]
    with open(paths['train_ann_file'], 'w') as f:
        json.dump(coco, f)
    return paths['data_root'] + '/'


def write_config(path, data_root, hooks=(), **top_level):
    """A config file: the quick-start RetinaNet at 1/4 width (SyncBN in the
    backbone), batch 2, 64x64 images kept at 64x64, no validation
    during training. ``hooks``: ``custom_hooks`` added to the base ones;
    ``top_level``: further config variables (a dict for a variable set
    here updates its top-level keys)."""
    lines = [
        f'_base_ = [{QUICKSTART!r}]',
        f'data_root = {data_root!r}',
        "custom_imports = dict(imports=['test_dist_common'], "
        'allow_failed_imports=False)',
        'model = dict(',
        "    backbone=dict(base_channels=8, norm_cfg=dict(type='SyncBN', "
        'requires_grad=True)),',
        '    neck=dict(in_channels=[16, 32, 64], out_channels=16),',
        '    bbox_head=dict(in_channels=16, feat_channels=16, '
        "stacked_convs=1, norm_cfg=dict(type='GN', num_groups=4, "
        'requires_grad=True)))',
        "_pipe = [dict(type='LoadImageFromFile'), "
        "dict(type='LoadAnnotations', with_bbox=True), "
        "dict(type='Resize', scale=(64, 64), keep_ratio=True)]",
        "_meta = ('img_id', 'img_path', 'ori_shape', 'img_shape', "
        "'scale_factor')",
        'train_dataloader = dict(batch_size=2, num_workers=0, '
        "persistent_workers=False, sampler=dict(type='DefaultSampler', "
        'shuffle=False), dataset=dict(data_root=data_root, '
        'filter_cfg=dict(filter_empty_gt=False), '
        "pipeline=_pipe + [dict(type='PackDetInputs')]))",
        'test_dataloader = dict(batch_size=2, num_workers=0, '
        'persistent_workers=False, dataset=dict(data_root=data_root, '
        "pipeline=_pipe + [dict(type='PackDetInputs', meta_keys=_meta)]))",
        "test_evaluator = dict(ann_file=data_root + 'annotations/val.json')",
        'val_dataloader = None',
        'val_evaluator = None',
        'val_cfg = None',
        'train_cfg = dict(max_epochs=1, val_interval=1)',
        # --auto-scale-lr halves the lr for 2 processes x batch 2
        'auto_scale_lr = dict(enable=False, base_batch_size=8)',
        'default_hooks = dict(logger=dict(interval=1), checkpoint=dict('
        'interval=1, max_keep_ckpts=-1, save_best=None))',
        # 'nccl' as in every config: detkit must switch to gloo on CPU. A
        # short timeout bounds a hang should the test's own kill fail.
        "env_cfg = dict(dist_cfg=dict(backend='nccl', timeout=120))",
        "custom_hooks = [dict(type='NumClassCheckHook'), "
        f"dict(type='BrokenImageReportHook')] + {list(hooks)!r}",
    ]
    assigned = {line.split(' = ')[0] for line in lines if ' = ' in line}
    for key, value in top_level.items():
        if key in assigned and isinstance(value, dict):
            # A second `key = ...` would replace the one above (only
            # _base_ files are merged): update it.
            lines.append(f'{key}.update({value!r})')
        else:
            lines.append(f'{key} = {value!r}')
    with open(path, 'w') as f:
        f.write('\n'.join(lines) + '\n')
    return str(path)


def script_env(**extra):
    """Environment for the launcher scripts: this interpreter, the hooks of
    this module importable, one thread per process."""
    env = dict(os.environ, PYTHON=sys.executable, OMP_NUM_THREADS='1')
    env['PYTHONPATH'] = os.pathsep.join(
        [TESTS_DIR, osp.dirname(TESTS_DIR)] +
        [p for p in [os.environ.get('PYTHONPATH')] if p])
    env.update({key: str(value) for key, value in extra.items()})
    return env


def start_script(name, *args, cwd, **env):
    """Start ``tools/<name> args`` in a new session (so that a timeout can
    kill torchrun and its workers together); stdout and stderr merged."""
    return subprocess.Popen(
        ['bash', osp.join(REPO_ROOT, 'tools', name), *map(str, args)],
        cwd=cwd, env=script_env(**env), stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT, text=True, start_new_session=True)


def finish(procs, timeout):
    """Wait for all ``procs`` (at most ``timeout`` seconds in all); kill the
    sessions of those still running then. Returns their outputs."""
    deadline = time.monotonic() + timeout
    outputs = []
    for proc in procs:
        try:
            out, _ = proc.communicate(
                timeout=max(deadline - time.monotonic(), 0.1))
        except subprocess.TimeoutExpired:
            for p in procs:
                if p.poll() is None:
                    os.killpg(p.pid, signal.SIGKILL)
            out, _ = proc.communicate()
            out += f'\n[killed after the {timeout} s timeout]'
        outputs.append(out)
    return outputs


def run_script(name, *args, cwd, timeout, **env):
    """Run ``tools/<name> args``; returns (return code, output, seconds)."""
    start = time.monotonic()
    proc = start_script(name, *args, cwd=cwd, **env)
    out, = finish([proc], timeout)
    return proc.returncode, out, time.monotonic() - start


def param_digest(named_tensors):
    """sha256 over the names and bytes of ``(name, tensor)`` pairs: equal
    digests mean bit-identical parameters."""
    sha = hashlib.sha256()
    for name, tensor in named_tensors:
        sha.update(name.encode())
        sha.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    return sha.hexdigest()


def model_param_digest(model):
    module = getattr(model, 'module', model)
    return param_digest(module.named_parameters())


def read_json(path):
    with open(path) as f:
        return json.load(f)


@HOOKS.register_module(name='_DistRecordHook', force=True)
class DistRecordHook(Hook):
    """Each rank writes ``record_rank<r>.json`` into its work_dir: where
    training started (epoch, iter, initial LR, parameter digest), each
    iteration's local and logged (returned by ``train_step``) values,
    the parameter names, the final parameter digest and the steps skipped
    as non-finite.

    ``nan_at=(rank, iter)`` makes that rank's losses NaN at that (0-based)
    iteration.
    """

    def __init__(self, nan_at=None):
        self.nan_at = tuple(nan_at) if nan_at else None

    def before_train(self, runner):
        module = runner.model.module
        self.record = dict(
            rank=runner.rank,
            world_size=runner.world_size,
            start=dict(
                epoch=runner.epoch,
                iter=runner.iter,
                initial_lr=runner.optim_wrapper.param_groups[0]
                ['initial_lr'],
                params=model_param_digest(module)),
            iters=[])
        parse_losses = module.parse_losses

        def recording_parse_losses(losses):
            if self.nan_at == (runner.rank, runner.iter):
                losses = {k: v * float('nan') for k, v in losses.items()}
            loss, log_vars = parse_losses(losses)
            self._local = {k: float(v) for k, v in log_vars.items()}
            return loss, log_vars

        module.parse_losses = recording_parse_losses

    def after_train_iter(self, runner, batch_idx, data_batch=None,
                         outputs=None):
        self.record['iters'].append(
            dict(iter=runner.iter, local=self._local,
                 logged={k: float(v) for k, v in outputs.items()}))

    def after_train(self, runner):
        module = runner.model.module
        self.record.update(
            param_names=[name for name, _ in module.named_parameters()],
            end_params=model_param_digest(module),
            skipped=module.num_skipped_steps)
        path = osp.join(runner.work_dir, f'record_rank{runner.rank}.json')
        with open(path, 'w') as f:
            json.dump(self.record, f)


@HOOKS.register_module(name='_DistCrashHook', force=True)
class DistCrashHook(Hook):
    """Raise on ``rank`` before iteration ``iter`` (0-based), while the
    other ranks go on into the iteration's collectives."""

    def __init__(self, rank=1, iter=1):
        self.rank, self.iter = rank, iter

    def before_train_iter(self, runner, batch_idx, data_batch=None):
        if runner.rank == self.rank and runner.iter == self.iter:
            raise RuntimeError(f'deliberate crash on rank {self.rank} '
                               f'before iteration {self.iter + 1}')


@HOOKS.register_module(name='_DistMetricsHook', force=True)
class DistMetricsHook(Hook):
    """Rank 0 writes the test metrics to ``<work_dir>/metrics.json``
    (``json`` keeps every digit of a float)."""

    def after_test_epoch(self, runner, metrics=None):
        if runner.rank == 0:
            with open(osp.join(runner.work_dir, 'metrics.json'), 'w') as f:
                json.dump(metrics, f)
