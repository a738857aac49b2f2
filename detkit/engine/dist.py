"""Distributed training without CUDA: gloo process groups and DDP on CPU.

mmengine 0.10.7's ``launcher='pytorch'`` / ``'slurm'`` always calls
``torch.cuda.set_device`` and its runner wraps the model in DDP with
``device_ids=[LOCAL_RANK]``; both fail on a machine without CUDA. When
:func:`use_gloo` says so, :class:`~detkit.engine.runner.DetRunner` calls
:func:`init_gloo_dist` before mmengine's ``setup_env`` (which then sees an
initialised group and skips its own ``init_dist``) and wraps the model with
:func:`wrap_ddp_without_device_ids`. With CUDA and nccl, mmengine's own
path runs unchanged.
"""
import datetime
import logging
import os
import subprocess

import torch
import torch.distributed as torch_dist
from mmengine.logging import print_log
from mmengine.model import convert_sync_batchnorm, revert_sync_batchnorm

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


def wrap_ddp_without_device_ids(model, model_wrapper_cfg=None, sync_bn=None,
                                find_unused_parameters=False):
    """Wrap ``model`` (already on its device) for gloo training.

    ``device_ids=None`` makes DDP work on CPU modules (and on a CUDA module
    on the process's current device). ``model_wrapper_cfg`` builds another
    registered wrapper the same way. On CPU, ``SyncBatchNorm`` layers (which
    only run on GPUs) become ordinary BN with per-process statistics;
    on a GPU, ``sync_bn`` (``'torch'`` or ``'mmcv'``) converts BN layers as
    mmengine does.
    """
    if all(p.device.type == 'cpu' for p in model.parameters()):
        model = revert_sync_batchnorm(model)
        if sync_bn is not None:
            print_log(f'sync_bn={sync_bn!r} is ignored on CPU: SyncBatchNorm '
                      'needs GPUs.', logger='current', level=logging.WARNING)
    elif sync_bn is not None:
        model = convert_sync_batchnorm(model, sync_bn)
    cfg = dict(model_wrapper_cfg or dict(
        broadcast_buffers=False,
        find_unused_parameters=find_unused_parameters))
    cfg.setdefault('type', 'MMDistributedDataParallel')
    wrapper = MODEL_WRAPPERS.get(cfg['type'])
    if wrapper is None:
        raise KeyError(f"model_wrapper_cfg type {cfg['type']!r} is not a "
                       'registered model wrapper.')
    default_args = dict(module=model)
    if issubclass(wrapper, torch.nn.parallel.DistributedDataParallel):
        default_args['device_ids'] = None
    return MODEL_WRAPPERS.build(cfg, default_args=default_args)
