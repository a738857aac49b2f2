"""Distributed training without CUDA: gloo process groups and DDP on CPU.

mmengine 0.10.7's ``launcher='pytorch'`` / ``'slurm'`` always calls
``torch.cuda.set_device`` and its runner wraps the model in DDP with
``device_ids=[LOCAL_RANK]``; both fail on a machine without CUDA. When
:func:`use_gloo` says so, :class:`~detkit.engine.runner.DetRunner` calls
:func:`init_gloo_dist` before mmengine's ``setup_env`` (which then sees an
initialised group and skips its own ``init_dist``) and wraps the model with
:func:`wrap_ddp_without_device_ids`. With CUDA and nccl, mmengine's own
path runs.

On both paths the default wrapper is :class:`DetDistributedDataParallel`:
mmengine's wrapper logs the losses of rank 0 alone and bypasses the
detector's non-finite-loss guard; detkit's averages the logged values over
the ranks and applies the guard on every rank alike.

:func:`ending_process_group` ends the tools' runs. Without it, a rank whose
last collective had just returned went straight into interpreter shutdown
while one of gloo's worker threads was still releasing that collective's
work: releasing a tensor that Python has seen takes the GIL, a thread that
asks for the GIL during finalisation is ended with ``pthread_exit``, and
unwinding through gloo's ``noexcept`` work loop aborts the process
(``terminate called without an active exception``, SIGABRT, seen in a
core dump in ``ProcessGroupGloo::runLoop`` -> ``~AsyncAllgatherWork`` ->
``take_gil`` -> ``pthread_exit``). torchrun then killed the other ranks,
rank 0 perhaps while it wrote its last checkpoint. So, in this order:

1. a barrier keeps every rank until all have finished (rank 0's last
   checkpoint included);
2. the runner's DDP wrapper is dropped: it holds the process group, and
   while anything does, ``destroy_process_group`` leaves gloo's threads
   running (a barrier alone still failed 1 run in 30);
3. ``destroy_process_group`` then frees the group, which joins gloo's
   threads with the GIL released: whatever they still had to release is
   released while the interpreter is whole.
"""
import contextlib
import datetime
import gc
import logging
import os
import subprocess
import zlib
from collections import OrderedDict

import torch
import torch.distributed as torch_dist
from mmengine.logging import print_log
from mmengine.model import (MMDistributedDataParallel,
                            convert_sync_batchnorm, is_model_wrapper,
                            revert_sync_batchnorm)
from mmengine.model.utils import detect_anomalous_params

from detkit.registry import MODEL_WRAPPERS

_TORCHRUN_VARS = ('RANK', 'WORLD_SIZE', 'LOCAL_RANK', 'MASTER_ADDR',
                  'MASTER_PORT')


def use_gloo(launcher, env_cfg):
    """Whether detkit sets up distribution itself: a ``pytorch`` or
    ``slurm`` launcher with no CUDA, or with ``dist_cfg.backend='gloo'``."""
    if launcher not in ('pytorch', 'slurm'):
        return False
    backend = (env_cfg or {}).get('dist_cfg', {}).get('backend', 'nccl')
    return backend == 'gloo' or not torch.cuda.is_available()


def init_gloo_dist(launcher, timeout=None, port=None, **kwargs):
    """Initialise the default process group with gloo.

    Args:
        launcher (str): ``'pytorch'`` (torchrun sets RANK, WORLD_SIZE,
            LOCAL_RANK, MASTER_ADDR, MASTER_PORT) or ``'slurm'`` (the
            torchrun variables are derived from SLURM_PROCID, SLURM_NTASKS,
            SLURM_LOCALID and SLURM_NODELIST first).
        timeout (float, optional): seconds, like mmengine's ``dist_cfg``.
        port (int, optional): master port for slurm (else MASTER_PORT, else
            29500).
        **kwargs: other ``dist_cfg`` keys; ``backend`` is ignored (gloo).
    """
    if launcher == 'slurm':
        _torchrun_env_from_slurm(port)
    missing = [name for name in _TORCHRUN_VARS if name not in os.environ]
    if missing:
        raise RuntimeError(
            f"launcher={launcher!r} needs the environment variables "
            f"{', '.join(_TORCHRUN_VARS)}, but {', '.join(missing)} "
            'is/are not set. Start the job with `python -m '
            'torch.distributed.run --nproc_per_node N tools/train.py ... '
            "--launcher pytorch` (or srun with --launcher slurm), or use "
            '--launcher none for one process.')
    local_rank = int(os.environ['LOCAL_RANK'])
    if torch.cuda.is_available():
        # gloo chosen on a CUDA machine: still give each process its GPU.
        torch.cuda.set_device(local_rank)
    init_kwargs = {}
    if timeout is not None:
        init_kwargs['timeout'] = datetime.timedelta(seconds=timeout)
    torch_dist.init_process_group(
        backend='gloo',
        init_method='env://',
        rank=int(os.environ['RANK']),
        world_size=int(os.environ['WORLD_SIZE']),
        **init_kwargs)


def shutdown_process_group(runner=None):
    """Steps 1-3 of the module docstring: barrier, drop ``runner``'s model
    wrapper (``runner.model`` becomes the bare model), destroy the default
    process group. Nothing without a process group."""
    if not (torch_dist.is_available() and torch_dist.is_initialized()):
        return
    torch_dist.barrier()
    if runner is not None and is_model_wrapper(getattr(runner, 'model',
                                                       None)):
        runner.model = runner.model.module
    gc.collect()  # DDP's autograd hooks make reference cycles
    torch_dist.destroy_process_group()


@contextlib.contextmanager
def ending_process_group(runner):
    """Run the body (``runner.train()`` or ``runner.test()``), then
    :func:`shutdown_process_group`.

    Skipped when the body raised, unless the exception has ``all_ranks =
    True`` (every rank raises it at the same point, as
    :class:`~detkit.engine.interrupts.TrainingInterrupted`): a rank that
    crashed alone must not wait in a barrier for ranks that never come.
    """
    try:
        yield
    except BaseException as err:
        if getattr(err, 'all_ranks', False):
            shutdown_process_group(runner)
        raise
    shutdown_process_group(runner)


def _torchrun_env_from_slurm(port):
    try:
        rank = int(os.environ['SLURM_PROCID'])
        world_size = int(os.environ['SLURM_NTASKS'])
    except KeyError as err:
        raise RuntimeError(
            f"launcher='slurm' needs {err.args[0]} in the environment: run "
            'the job with srun, or use --launcher pytorch with torchrun.'
        ) from None
    os.environ.setdefault('RANK', str(rank))
    os.environ.setdefault('WORLD_SIZE', str(world_size))
    os.environ.setdefault('LOCAL_RANK', os.environ.get('SLURM_LOCALID', '0'))
    if port is not None:
        os.environ['MASTER_PORT'] = str(port)
    os.environ.setdefault('MASTER_PORT', '29500')
    if 'MASTER_ADDR' not in os.environ:
        os.environ['MASTER_ADDR'] = _first_slurm_host()


def _first_slurm_host():
    nodes = os.environ.get('SLURM_NODELIST') or os.environ.get(
        'SLURM_JOB_NODELIST')
    if not nodes:
        raise RuntimeError("launcher='slurm': neither MASTER_ADDR nor "
                           'SLURM_NODELIST is set; set MASTER_ADDR to the '
                           'first node of the job.')
    try:
        out = subprocess.run(['scontrol', 'show', 'hostnames', nodes],
                             check=True, capture_output=True, text=True)
    except (OSError, subprocess.CalledProcessError) as err:
        raise RuntimeError(
            f"launcher='slurm': could not expand SLURM_NODELIST={nodes!r} "
            f'with scontrol ({err}); set MASTER_ADDR to the first node of '
            'the job.') from None
    return out.stdout.split()[0]


def default_wrapper_cfg(find_unused_parameters=False):
    """The model wrapper config used when a config sets no
    ``model_wrapper_cfg``: mmengine's defaults with detkit's wrapper."""
    return dict(
        type='DetDistributedDataParallel',
        broadcast_buffers=False,
        find_unused_parameters=find_unused_parameters)


def scoped_wrapper_cfg(model_wrapper_cfg):
    """``model_wrapper_cfg`` with a detkit wrapper's type written
    ``'detkit.<name>'``: mmengine's ``Runner.wrap_model`` (the CUDA path)
    looks the type up in its root registry, which ignores the default scope
    and would not find a bare detkit name."""
    cfg = dict(model_wrapper_cfg)
    name = cfg.get('type')
    if (isinstance(name, str) and '.' not in name
            and name in MODEL_WRAPPERS.module_dict):
        cfg['type'] = f'{MODEL_WRAPPERS.scope}.{name}'
    return cfg


def wrap_ddp_without_device_ids(model, model_wrapper_cfg=None, sync_bn=None,
                                find_unused_parameters=False):
    """Wrap ``model`` (already on its device) for gloo training.

    ``device_ids=None`` makes DDP work on CPU modules (and on a CUDA module
    on the process's current device). ``model_wrapper_cfg`` builds another
    registered wrapper the same way (default: :func:`default_wrapper_cfg`).
    On CPU, ``SyncBatchNorm`` layers (``norm_cfg=dict(type='SyncBN')``;
    torch runs them on GPUs only) become ordinary BN layers with the same
    parameters and buffers, whose statistics are per process; a warning
    says so. On a GPU, ``sync_bn`` (``'torch'`` or ``'mmcv'``) converts BN
    layers as mmengine does.
    """
    if all(p.device.type == 'cpu' for p in model.parameters()):
        num_sync = sum(
            isinstance(m, torch.nn.SyncBatchNorm) for m in model.modules())
        model = revert_sync_batchnorm(model)
        if num_sync or sync_bn is not None:
            source = (f'{num_sync} SyncBN layer(s)' if num_sync else
                      f'sync_bn={sync_bn!r}')
            print_log(
                f'{source} on CPU: torch synchronises BatchNorm statistics '
                'on GPUs only, so each process normalises with the '
                'statistics of its own batch (plain BN; parameters and '
                'buffers keep their names). Train on GPUs for SyncBN.',
                logger='current',
                level=logging.WARNING)
    elif sync_bn is not None:
        model = convert_sync_batchnorm(model, sync_bn)
    cfg = dict(model_wrapper_cfg or default_wrapper_cfg(
        find_unused_parameters))
    cfg.setdefault('type', 'MMDistributedDataParallel')
    wrapper = MODEL_WRAPPERS.get(cfg['type'])
    if wrapper is None:
        raise KeyError(f"model_wrapper_cfg type {cfg['type']!r} is not a "
                       'registered model wrapper.')
    default_args = dict(module=model)
    if issubclass(wrapper, torch.nn.parallel.DistributedDataParallel):
        default_args['device_ids'] = None
    return MODEL_WRAPPERS.build(cfg, default_args=default_args)


def average_across_ranks(log_vars):
    """Mean over all ranks of each logged value.

    Args:
        log_vars (dict[str, Tensor]): scalars from ``parse_losses``, with
            the same names in the same order on every rank.

    Returns:
        OrderedDict[str, Tensor]: detached 0-dim float32 means, in the
        same order. Non-finite on every rank when it is on any rank.

    Raises:
        RuntimeError: the ranks log different names (a loss term that only
            some ranks compute): averaging them would mix terms, and DDP
            would wait forever for gradients of the missing term.
    """
    names = list(log_vars)
    values = torch.stack([
        torch.as_tensor(v).detach().float().reshape(())
        for v in log_vars.values()
    ])
    if not torch_dist.is_available() or not torch_dist.is_initialized():
        return OrderedDict(zip(names, values))
    world_size = torch_dist.get_world_size()
    # Agree on the names first (count and checksum): all_reduce of
    # different-sized tensors would hang or mix terms.
    signature = [len(names), zlib.crc32('\0'.join(names).encode())]
    agreed = torch.tensor(signature, dtype=torch.int64, device=values.device)
    torch_dist.all_reduce(agreed)
    if agreed.tolist() != [x * world_size for x in signature]:
        raise RuntimeError(
            f'rank {torch_dist.get_rank()} logs {names}, but other ranks '
            'log different loss names. Every rank must return the same '
            'loss keys from model.loss() (use a zero loss, e.g. '
            'pred.sum() * 0, for a term with nothing to learn from).')
    torch_dist.all_reduce(values)
    return OrderedDict(zip(names, values / world_size))


@MODEL_WRAPPERS.register_module()
class DetDistributedDataParallel(MMDistributedDataParallel):
    """mmengine's ``MMDistributedDataParallel``, with a ``train_step`` that

    - returns the losses averaged over all ranks (mmengine logs those of
      rank 0 only), so the log shows the loss of the whole batch, and
    - applies the detector's non-finite-loss guard (``BaseDetector``'s
      ``_handle_nonfinite``: stop, or skip the step with
      ``skip_nonfinite=True``), which mmengine's wrapper never calls. The
      averaged values are non-finite on every rank when one rank's loss
      is, so all ranks take the same decision and none is left waiting in
      DDP's gradient all-reduce.

    Same arguments as ``MMDistributedDataParallel``.
    """

    def train_step(self, data, optim_wrapper):
        with optim_wrapper.optim_context(self):
            data = self.module.data_preprocessor(data, training=True)
            losses = self._run_forward(data, mode='loss')
        parsed_loss, log_vars = self.module.parse_losses(losses)
        mean_vars = average_across_ranks(log_vars)
        handle_nonfinite = getattr(self.module, '_handle_nonfinite', None)
        if handle_nonfinite is not None and not bool(
                torch.isfinite(torch.stack(list(mean_vars.values()))).all()):
            bad_terms = [
                name for name, value in log_vars.items()
                if not torch.isfinite(torch.as_tensor(value)).all()
            ]
            handle_nonfinite(bad_terms, data, optim_wrapper)
            return mean_vars
        optim_wrapper.update_params(parsed_loss)
        if self.detect_anomalous_params:
            detect_anomalous_params(parsed_loss, model=self)
        return mean_vars
