"""What ``tools/train.py`` and ``tools/test.py`` do, as functions.

The tools only parse arguments; everything they change in a config, and how
they build the runner, lives here so that it is tested and reusable. The
flags and their effect follow mmdetection's tools.
"""
import difflib
import os
import os.path as osp

from mmengine.config import Config, DictAction
from mmengine.evaluator import DumpResults
from mmengine.hooks import Hook

from detkit.registry import HOOKS, RUNNERS
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
        check_cfg_options(cfg, args.cfg_options, path)
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
    """The checkpoint to test, and ``--show``/``--show-dir``. Unless
    ``--allow-partial-checkpoint``, a checkpoint holding fewer than half of
    the model's weights is refused (:class:`PartialCheckpointGuardHook`)."""
    _check_checkpoint(args.checkpoint)
    cfg.load_from = args.checkpoint
    if not getattr(args, 'allow_partial_checkpoint', False):
        cfg.custom_hooks = list(cfg.get('custom_hooks') or []) + [
            dict(type='PartialCheckpointGuardHook')]
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


@HOOKS.register_module()
class PartialCheckpointGuardHook(Hook):
    """Refuse to test a checkpoint that fills fewer than half of the model's
    weights (another detector's file, an empty state_dict): the metrics of
    a mostly random model would look like a result. ``tools/test.py`` adds
    it unless ``--allow-partial-checkpoint``; it raises
    :class:`~detkit.engine.checkpoint.PartialCheckpointError` before any
    weight is loaded."""

    priority = 'VERY_HIGH'

    def after_load_checkpoint(self, runner, checkpoint):
        from .checkpoint import check_loaded_fraction, weights_report
        model = getattr(runner.model, 'module', runner.model)
        source = runner.cfg.get('load_from') or 'checkpoint'
        check_loaded_fraction(weights_report(model, checkpoint, source=source),
                              source, type(model).__name__)


# ------------------------------------------------ checking --cfg-options
# Top-level keys that mmengine's Runner, DetRunner or detkit's tools read
# even when a config file does not set them, so an override may add them.
# Anything else that is not already in the config would be dropped
# silently (``modle.bbox_head.num_classes=5``).
KNOWN_TOP_LEVEL_KEYS = (
    'model', 'work_dir', 'experiment_name', 'train_dataloader',
    'val_dataloader', 'test_dataloader', 'train_cfg', 'val_cfg', 'test_cfg',
    'auto_scale_lr', 'optim_wrapper', 'param_scheduler', 'val_evaluator',
    'test_evaluator', 'default_hooks', 'custom_hooks', 'data_preprocessor',
    'load_from', 'resume', 'launcher', 'env_cfg', 'log_processor',
    'log_level', 'visualizer', 'default_scope', 'randomness',
    'model_wrapper_cfg', 'find_unused_parameters', 'sync_bn', 'compile',
    'runner_type', 'custom_imports', 'strategy', 'tta_model', 'tta_pipeline',
    'activation_checkpointing', 'efficient_conv_bn_eval', 'channels_last')


class ConfigOverrideError(KeyError):
    """An override names a key that does not exist, or replaces a dict of
    the config by a plain value."""

    def __str__(self):
        return str(self.args[0])


def check_cfg_options(cfg, options, source, flag='--cfg-options'):
    """Refuse overrides (``{'model.bbox_head.num_classes': 5, ...}``, as
    ``--cfg-options`` gives them) that mmengine would merge without effect
    or that break the config:

    - a top-level key that is neither in ``cfg`` (the config file with its
      ``_base_`` files merged) nor in :data:`KNOWN_TOP_LEVEL_KEYS`: the
      error names the closest keys;
    - a dict of the config replaced by a number, string or bool
      (``model.bbox_head=3``).

    ``source`` names the config in the message (its path), ``flag`` the
    option the overrides came from.
    """
    for key, value in options.items():
        option = f'{key}={value!r}' if isinstance(value, str) else \
            f'{key}={value}'
        top = key.split('.')[0]
        if top not in cfg and top not in KNOWN_TOP_LEVEL_KEYS:
            names = sorted(set(cfg.keys()) | set(KNOWN_TOP_LEVEL_KEYS))
            close = difflib.get_close_matches(top, names, n=3, cutoff=0.6)
            hint = (f' Did you mean {", ".join(repr(c) for c in close)}?'
                    if close else
                    f' The config has: {", ".join(sorted(cfg.keys()))}.')
            raise ConfigOverrideError(
                f'{flag} {option}: {source} has no top-level key '
                f'{top!r}, and neither mmengine nor detkit reads one of that '
                f'name, so the override would be ignored.{hint} To add a new '
                'top-level key on purpose, write it into the config file (or '
                'into a config that inherits it through _base_).')
        current = _lookup(cfg, key.split('.'))
        if isinstance(current, dict) and isinstance(value,
                                                    (bool, int, float, str)):
            keys = list(current)
            more = ' (and more)' if len(keys) > 6 else ''
            raise ConfigOverrideError(
                f'{flag} {option}: {key} is a dict in {source} '
                f'({_brief(current)}), and a dict is expected there, not '
                f'{type(value).__name__} {value!r}. Set a key inside it '
                f'instead: {key}.KEY={value!r}, KEY one of '
                f'{", ".join(keys[:6])}{more}.')


def _lookup(cfg, parts):
    """The value at the dotted path ``parts`` of ``cfg`` (list items by
    index), or None when the path does not exist."""
    node = cfg
    for part in parts:
        if isinstance(node, (dict, Config)) and part in node:
            node = node[part]
        elif isinstance(node, (list, tuple)) and part.isdigit() and \
                int(part) < len(node):
            node = node[int(part)]
        else:
            return None
    return node


def _brief(node):
    return (f"type={node['type']!r}" if 'type' in node else
            f'keys {", ".join(list(node)[:5])}')
