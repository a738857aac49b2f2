"""What ``tools/train.py`` and ``tools/test.py`` do, as functions.

The tools only parse arguments; everything they change in a config, and how
they build the runner, lives here so that it is tested and reusable. The
flags and their effect follow mmdetection's tools.
"""
import os
import os.path as osp

from mmengine.config import Config, DictAction
from mmengine.evaluator import DumpResults

from detkit.registry import RUNNERS
from detkit.utils.scope import to_detkit_scope
from .runner import DetRunner


def add_common_args(parser):
    """Flags both tools take."""
    parser.add_argument(
        '--work-dir',
        help='directory for logs and checkpoints (default: '
        './work_dirs/<config name>, or the config\'s work_dir)')
    parser.add_argument(
        '--cfg-options',
        nargs='+',
        action=DictAction,
        help='override config keys, e.g. train_cfg.max_epochs=24 '
        "optim_wrapper.optimizer.lr=0.02 'data_root=\"/data/coco/\"'")
    parser.add_argument(
        '--launcher',
        choices=['none', 'pytorch', 'slurm', 'mpi'],
        default='none',
        help='how the processes were started (torchrun: pytorch)')
    # torch.distributed.launch passes --local-rank (torch >= 2.0) or
    # --local_rank (older); torchrun sets LOCAL_RANK instead.
    parser.add_argument('--local_rank', '--local-rank', type=int, default=0)


def load_config(path, args):
    """Read the config file and apply what every tool applies:
    ``--cfg-options``, the launcher, ``default_scope`` and ``work_dir``."""
    if not osp.isfile(path):
        raise FileNotFoundError(
            f'Config file {path!r} does not exist (relative paths are '
            f'resolved from {os.getcwd()!r}).')
    if 'LOCAL_RANK' not in os.environ:
        os.environ['LOCAL_RANK'] = str(args.local_rank)
    cfg = Config.fromfile(path)
    if args.cfg_options:
        cfg.merge_from_dict(args.cfg_options)
    cfg.launcher = args.launcher
    # mmdetection's own configs (default_scope='mmdet') run as they are.
    to_detkit_scope(cfg, source=path)
    if args.work_dir is not None:
        cfg.work_dir = args.work_dir
    elif cfg.get('work_dir') is None:
        cfg.work_dir = osp.join('./work_dirs',
                                osp.splitext(osp.basename(path))[0])
    return cfg


def apply_train_args(cfg, args):
    """``--amp``, ``--auto-scale-lr`` and ``--resume [PATH]``."""
    if args.amp:
        if cfg.optim_wrapper.get('type') == 'AmpOptimWrapper':
            print('AMP training is already enabled in the config.')
        cfg.optim_wrapper.type = 'AmpOptimWrapper'
        cfg.optim_wrapper.loss_scale = 'dynamic'
    if args.auto_scale_lr:
        scale = cfg.get('auto_scale_lr')
        if not scale or 'base_batch_size' not in scale:
            raise RuntimeError(
                '--auto-scale-lr needs `auto_scale_lr = dict(enable=False, '
                'base_batch_size=16)` in the config (base_batch_size: the '
                'total batch size the learning rate was tuned for).')
        cfg.auto_scale_lr.enable = True
    if args.resume == 'auto':
        # Runner finds the latest checkpoint through work_dir/last_checkpoint.
        cfg.resume = True
        cfg.load_from = None
    elif args.resume is not None:
        _check_checkpoint(args.resume)
        cfg.resume = True
        cfg.load_from = args.resume
    return cfg


def _check_checkpoint(path):
    if '://' not in path and not osp.isfile(path):
        raise FileNotFoundError(
            f'Checkpoint file {path!r} does not exist (relative paths are '
            f'resolved from {os.getcwd()!r}).')


def apply_test_args(cfg, args):
    """The checkpoint to test, and ``--show``/``--show-dir``."""
    _check_checkpoint(args.checkpoint)
    cfg.load_from = args.checkpoint
    if args.show or args.show_dir:
        enable_visualization(cfg, args.show, args.show_dir, args.wait_time)
    return cfg


def enable_visualization(cfg, show=False, show_dir=None, wait_time=2.0):
    """Switch on the ``visualization`` default hook (``DetVisualizationHook``)
    to draw predictions, show them and/or save them under
    ``<work_dir>/<timestamp>/<show_dir>``."""
    hook = cfg.get('default_hooks', {}).get('visualization')
    if hook is None:
        raise RuntimeError(
            '--show/--show-dir need a visualization hook in the config: add '
            "default_hooks = dict(visualization=dict(type="
            "'DetVisualizationHook')) (configs/_base_/default_runtime.py "
            'has it).')
    hook['draw'] = True
    if show:
        hook['show'] = True
        hook['wait_time'] = wait_time
    if show_dir:
        hook['test_out_dir'] = show_dir


def build_runner(cfg):
    """``RUNNERS.build(cfg)`` when the config names ``runner_type``,
    otherwise :class:`DetRunner`."""
    if 'runner_type' in cfg:
        return RUNNERS.build(cfg)
    return DetRunner.from_cfg(cfg)


def add_dump_results(runner, out_file):
    """Also dump every prediction (as dicts of CPU tensors) to ``out_file``
    (``.pkl``, mmengine's ``DumpResults``, readable with ``mmengine.load``)
    when testing."""
    runner.test_evaluator.metrics.append(DumpResults(out_file_path=out_file))
