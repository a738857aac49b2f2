"""Does a config file build in detkit, as it is? One check per config.

:func:`check_config` loads a config (mmdetection's own files too: they are
run in detkit's scope, see :mod:`detkit.utils.scope`) and builds, stage by
stage, everything a run would build from it:

``model``
    ``MODELS.build(cfg.model)`` on the ``meta`` device: parameters get
    shapes but no memory and no initialisation, so a ResNeXt-101 builds in a
    fraction of a second. Names, shapes and dtypes are what a CPU build
    gives (the tests check this).
``keys``
    with a key list (``key<TAB>shape<TAB>dtype`` per line, shape dims
    joined by ``x``, ``-`` for a scalar; ``#`` comments), the model's
    ``state_dict`` must hold exactly those keys, shapes and dtypes, so that
    a checkpoint with those keys loads with ``strict=True``.
``classes``
    every head's ``num_classes`` equals the number of classes of each
    dataloader's dataset (its ``metainfo``, else the dataset class's).
``pipelines``
    every transform of the train / val / test datasets (through dataset
    wrappers) and of ``tta_pipeline``.
``datasets``
    every dataloader's dataset, with its wrappers, on a one-image dummy
    annotation file (COCO json) or unloaded (``lazy_init``) for other
    formats; the sampler and batch sampler types must be registered.
``runtime``
    the visualizer, the log processor, every default and custom hook.
``evaluators``
    every metric of ``val_evaluator`` / ``test_evaluator``, on the dummy
    annotation file where they read one.
``schedule``
    the optimizer wrapper and parameter schedulers on a small stand-in
    model (a conv and a BatchNorm, so that ``paramwise_cfg`` rules apply;
    ``AmpOptimWrapper``, which needs a GPU, as a plain ``OptimWrapper``
    once its type is found); the loop types must be registered.
``tta``
    ``tta_model`` wrapped around the model, when the config has one.

A failure in one stage does not stop the others; the result lists each
with the first line of its exception. :mod:`detkit.utils.config_tree` runs
this over a folder tree and prints the table
(``tools/misc/check_mmdet_configs.py``); key lists are read and compared by
:mod:`detkit.utils.key_lists`.
"""
import contextlib
import copy
import logging
import os
import os.path as osp
import tempfile
import traceback
import uuid
import warnings
from dataclasses import dataclass, field
from typing import List, Optional, Tuple

import torch
from mmengine.config import Config
from mmengine.logging import MMLogger
from mmengine.registry import DefaultScope
from mmengine.runner import get_priority

from .dummy_data import (classes_of, dataloaders, dataset_classes,
                         dummy_datasets, innermost_datasets,
                         write_dummy_coco)
from .key_lists import (build_model_cheaply, compare_keys, read_key_list,
                        state_dict_keys)
from .scope import to_detkit_scope


@dataclass
class CheckResult:
    """What :func:`check_config` found for one config."""
    config: str
    failures: List[Tuple[str, str]] = field(default_factory=list)
    num_keys: Optional[int] = None
    key_list: Optional[str] = None
    skipped: Optional[str] = None
    notes: List[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.failures and self.skipped is None

    @property
    def reason(self) -> str:
        """The first failure as ``stage: message`` (and how many more)."""
        if self.skipped:
            return f'skipped: {self.skipped}'
        if not self.failures:
            return '; '.join(self.notes)
        stage, message = self.failures[0]
        more = (f' (+{len(self.failures) - 1} more)'
                if len(self.failures) > 1 else '')
        return f'{stage}: {message}{more}'


class StageError(Exception):
    """A failure inside a stage, its message already saying where."""


def first_line(err: BaseException) -> str:
    """``'TypeName: first line of the message'`` (KeyError's quotes
    removed)."""
    if isinstance(err, StageError):
        return str(err)
    text = str(err).strip().splitlines()
    message = text[0] if text else ''
    if isinstance(err, KeyError) and message.startswith(("'", '"')):
        message = message[1:-1] if message[-1:] in "'\"" else message
    return f'{type(err).__name__}: {message}'


@contextlib.contextmanager
def _quiet_logger():
    """mmengine's INFO lines while building (one per parameter group of
    a ``paramwise_cfg``) would drown the table."""
    logger = MMLogger.get_current_instance()
    level = logger.level
    logger.setLevel(logging.WARNING)
    try:
        yield
    finally:
        logger.setLevel(level)


class _Stages:
    """Runs the stages of one config, collecting failures."""

    def __init__(self, result: CheckResult):
        self.result = result

    def run(self, stage, fn, *args):
        try:
            with warnings.catch_warnings(), _quiet_logger():
                warnings.simplefilter('ignore')
                return fn(*args)
        except Exception as err:  # noqa: BLE001 - every failure is reported
            self.result.failures.append((stage, first_line(err)))
            if os.environ.get('DETKIT_CONFIG_CHECK_TRACEBACK'):
                traceback.print_exc()
            return None


def _build_pipelines(cfg):
    from detkit.registry import TRANSFORMS
    pipelines = []
    for name, loader in dataloaders(cfg):
        for dataset in innermost_datasets(loader['dataset']):
            pipelines.append((name, dataset.get('pipeline') or []))
    if cfg.get('tta_pipeline'):
        pipelines.append(('tta_pipeline', cfg.tta_pipeline))
    with DefaultScope.overwrite_default_scope('detkit'):
        for name, pipeline in pipelines:
            for step in pipeline:
                try:
                    TRANSFORMS.build(copy.deepcopy(step))
                except Exception as err:
                    raise StageError(f'{name} {step.get("type")}: '
                                     f'{first_line(err)}') from err


def _build_datasets(cfg, ann_file):
    from detkit.registry import DATA_SAMPLERS, DATASETS
    with DefaultScope.overwrite_default_scope('detkit'):
        for name, loader in dataloaders(cfg):
            for key in ('sampler', 'batch_sampler'):
                kind = (loader.get(key) or {}).get('type')
                if kind is not None and DATA_SAMPLERS.get(kind) is None:
                    raise KeyError(f'{name}.{key}: {kind!r} is not in the '
                                   'data sampler registry')
            DATASETS.build(dummy_datasets(loader['dataset'], ann_file))


def _build_runtime(cfg, work_dir):
    from detkit.registry import HOOKS, LOG_PROCESSORS, VISUALIZERS
    with DefaultScope.overwrite_default_scope('detkit'):
        if cfg.get('visualizer'):
            visualizer = copy.deepcopy(cfg.visualizer)
            # Visualizers are named singletons: one fresh name per check.
            visualizer.update(name=f'config-check-{uuid.uuid4().hex}',
                              save_dir=work_dir)
            VISUALIZERS.build(visualizer)
        if cfg.get('log_processor'):
            LOG_PROCESSORS.build(copy.deepcopy(cfg.log_processor))
        hooks = [(f'default_hooks.{k}', v)
                 for k, v in (cfg.get('default_hooks') or {}).items()]
        hooks += [(f'custom_hooks[{i}]', h)
                  for i, h in enumerate(cfg.get('custom_hooks') or [])]
        for name, hook in hooks:
            if hook is None:  # a disabled default hook
                continue
            hook = copy.deepcopy(hook)
            try:
                # The runner takes 'priority' itself (a name or a number)
                # before building the hook from the rest.
                get_priority(hook.pop('priority', 'NORMAL'))
                HOOKS.build(hook)
            except Exception as err:
                raise StageError(f'{name}: {first_line(err)}') from err


def _build_evaluators(cfg, ann_file):
    from detkit.registry import METRICS
    with DefaultScope.overwrite_default_scope('detkit'):
        for name in ('val_evaluator', 'test_evaluator'):
            evaluator = cfg.get(name)
            if not evaluator:
                continue
            metrics = evaluator if isinstance(evaluator, list) else \
                evaluator.get('metrics', [evaluator]) \
                if evaluator.get('type') == 'Evaluator' else [evaluator]
            for metric in metrics:
                metric = copy.deepcopy(metric)
                if metric.get('ann_file'):
                    metric['ann_file'] = ann_file
                METRICS.build(metric)


def _build_schedule(cfg):
    from mmengine.optim import build_optim_wrapper

    from detkit.registry import LOOPS, OPTIM_WRAPPERS, PARAM_SCHEDULERS
    with DefaultScope.overwrite_default_scope('detkit'):
        for name in ('train_cfg', 'val_cfg', 'test_cfg'):
            kind = (cfg.get(name) or {}).get('type')
            if kind is not None and LOOPS.get(kind) is None:
                raise KeyError(f'{name}: {kind!r} is not in the loop '
                               'registry')
        if not cfg.get('optim_wrapper'):
            return
        wrapper_cfg = copy.deepcopy(cfg.optim_wrapper)
        kind = wrapper_cfg.get('type', 'OptimWrapper')
        if OPTIM_WRAPPERS.get(kind) is None:
            raise KeyError(f'optim_wrapper: {kind!r} is not in the optim '
                           'wrapper registry')
        if kind == 'AmpOptimWrapper' and not torch.cuda.is_available():
            wrapper_cfg['type'] = 'OptimWrapper'  # AMP needs a GPU
            for key in ('loss_scale', 'dtype', 'use_fsdp'):
                wrapper_cfg.pop(key, None)
        stand_in = torch.nn.Sequential(torch.nn.Conv2d(1, 1, 1),
                                       torch.nn.BatchNorm2d(1))
        optim_wrapper = build_optim_wrapper(stand_in, wrapper_cfg)
        schedulers = cfg.get('param_scheduler') or []
        if isinstance(schedulers, dict):
            schedulers = [schedulers]
        for scheduler in schedulers:
            PARAM_SCHEDULERS.build(
                dict(copy.deepcopy(scheduler), optimizer=optim_wrapper))


def _build_tta(cfg):
    from detkit.registry import MODELS
    tta = dict(copy.deepcopy(cfg.tta_model), module=copy.deepcopy(cfg.model))
    with DefaultScope.overwrite_default_scope('detkit'), torch.device('meta'):
        MODELS.build(tta)


def is_fragment(cfg) -> bool:
    """A config without a ``model`` (a piece others inherit, such as
    ``retinanet_tta.py``) cannot be run on its own."""
    return 'model' not in cfg


def check_config(path: str,
                 key_list: Optional[str] = None,
                 name: Optional[str] = None,
                 work_dir: Optional[str] = None) -> CheckResult:
    """Build everything of the config file ``path`` (see the module
    docstring); compare the model's keys with ``key_list`` when given.

    Args:
        path: config file.
        key_list: key list file; ``None`` skips the ``keys`` stage.
        name: how the config is named in the result (default: ``path``).
        work_dir: folder for the dummy annotation file and the visualizer
            (default: a temporary folder, removed afterwards).
    """
    result = CheckResult(name or path, key_list=key_list)
    stages = _Stages(result)
    cfg = stages.run('config', _load, path)
    if cfg is None:
        return result
    if is_fragment(cfg):
        result.skipped = 'no model (a fragment other configs inherit)'
        return result
    with tempfile.TemporaryDirectory() as tmp:
        work_dir = work_dir or tmp
        ann_file = stages.run('datasets', lambda: write_dummy_coco(
            osp.join(work_dir, 'dummy_instances.json'),
            dataset_classes(cfg)))
        model = stages.run('model', build_model_cheaply, cfg.model)
        if model is not None:
            result.num_keys = len(model.state_dict())
            if key_list is not None and not osp.isfile(key_list):
                result.key_list = None  # nothing to compare with
                result.notes.append(f'no key list {key_list}')
            elif key_list is not None:
                stages.run('keys', _check_keys, model, key_list)
            stages.run('classes', _check_classes, model, cfg)
        stages.run('pipelines', _build_pipelines, cfg)
        if ann_file is not None:
            stages.run('datasets', _build_datasets, cfg, ann_file)
            stages.run('evaluators', _build_evaluators, cfg, ann_file)
        stages.run('runtime', _build_runtime, cfg, work_dir)
        stages.run('schedule', _build_schedule, cfg)
        if cfg.get('tta_model'):
            stages.run('tta', _build_tta, cfg)
    return result


def _load(path):
    # The table says which configs are mmdetection's; no line per config.
    return to_detkit_scope(Config.fromfile(path), source=path, log=False)


def _check_classes(model, cfg):
    """Every head's ``num_classes`` against each dataloader's classes (what
    ``NumClassCheckHook`` checks when a run starts)."""
    from detkit.engine.hooks import check_num_classes
    for name, loader in dataloaders(cfg):
        for dataset in innermost_datasets(loader['dataset']):
            check_num_classes(model, classes_of(dataset), name.split('_')[0])


def _check_keys(model, key_list):
    problems = compare_keys(state_dict_keys(model), read_key_list(key_list))
    if problems:
        raise ValueError('; '.join(problems))
