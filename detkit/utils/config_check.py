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
with the first line of its exception. ``tools/misc/check_mmdet_configs.py``
runs this over a folder tree and prints the table.
"""
import contextlib
import copy
import glob
import json
import logging
import os
import os.path as osp
import tempfile
import traceback
import uuid
import warnings
from dataclasses import dataclass, field
from typing import Dict, List, Optional, Sequence, Tuple

import torch
from mmengine.config import Config
from mmengine.logging import MMLogger
from mmengine.runner import get_priority
from mmengine.registry import DefaultScope

from .scope import to_detkit_scope

STAGES = ('config', 'model', 'keys', 'classes', 'pipelines', 'datasets',
          'runtime', 'evaluators', 'schedule', 'tta')
# The method folders detkit supports, in mmdetection's config tree.
DEFAULT_FOLDERS = ('retinanet', 'ssd', 'rpn', 'faster_rcnn')
# Folders of a config tree that hold pieces, not whole configs.
FRAGMENT_FOLDERS = ('_base_', 'common')

KeyList = Dict[str, Tuple[Tuple[int, ...], str]]


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


def read_key_list(path: str) -> KeyList:
    """``{key: (shape, dtype)}`` from a key list file (see the module
    docstring for the format)."""
    keys = {}
    with open(path) as f:
        for num, line in enumerate(f, 1):
            if line.startswith('#') or not line.strip():
                continue
            parts = line.rstrip('\n').split('\t')
            if len(parts) != 3:
                raise ValueError(f'{path}:{num}: expected key<TAB>shape<TAB>'
                                 f'dtype, got {line.strip()!r}')
            key, shape, dtype = parts
            dims = () if shape == '-' else tuple(
                int(d) for d in shape.split('x'))
            keys[key] = (dims, dtype)
    return keys


def state_dict_keys(model) -> KeyList:
    """The same ``{key: (shape, dtype)}`` for a model's ``state_dict``."""
    return {
        key: (tuple(value.shape), str(value.dtype).replace('torch.', ''))
        for key, value in model.state_dict().items()
    }


def compare_keys(actual: KeyList, expected: KeyList) -> List[str]:
    """Differences between two key lists, one summary line per kind
    (missing / unexpected / shape or dtype), naming the first few keys."""

    def names(keys, limit=3):
        shown = ', '.join(keys[:limit])
        return shown + (f', ... ({len(keys)} in all)'
                        if len(keys) > limit else '')

    missing = [k for k in expected if k not in actual]
    unexpected = [k for k in actual if k not in expected]
    differ = [
        f'{k} (model {_fmt(actual[k])}, list {_fmt(expected[k])})'
        for k in expected if k in actual and actual[k] != expected[k]
    ]
    problems = []
    if missing:
        problems.append(f'{len(missing)} keys of the list missing in the '
                        f'model: {names(missing)}')
    if unexpected:
        problems.append(f'{len(unexpected)} model keys not in the list: '
                        f'{names(unexpected)}')
    if differ:
        problems.append(f'{len(differ)} shape/dtype mismatches: '
                        f'{names(differ, 2)}')
    return problems


def _fmt(entry) -> str:
    shape, dtype = entry
    return f"{'x'.join(map(str, shape)) or '-'} {dtype}"


def build_model_cheaply(model_cfg):
    """``MODELS.build(model_cfg)`` on the ``meta`` device (no memory, no
    initialisation), in the detkit scope."""
    from detkit.registry import MODELS
    with DefaultScope.overwrite_default_scope('detkit'), torch.device('meta'):
        return MODELS.build(copy.deepcopy(model_cfg))


def innermost_datasets(dataset_cfg) -> list:
    """The datasets that hold a ``pipeline``, through wrappers
    (``RepeatDataset.dataset``, ``ConcatDataset.datasets``, ...)."""
    if 'dataset' in dataset_cfg:
        return innermost_datasets(dataset_cfg['dataset'])
    if 'datasets' in dataset_cfg:
        return [d for sub in dataset_cfg['datasets']
                for d in innermost_datasets(sub)]
    return [dataset_cfg]


def _dataloaders(cfg) -> List[Tuple[str, dict]]:
    return [(name, cfg[name])
            for name in ('train_dataloader', 'val_dataloader',
                         'test_dataloader') if cfg.get(name)]


def _dataset_classes(cfg) -> List[str]:
    """Class names of the config's test (or train) dataset."""
    from detkit.registry import DATASETS
    for _, loader in reversed(_dataloaders(cfg)):
        for dataset in innermost_datasets(loader['dataset']):
            classes = (dataset.get('metainfo') or {}).get('classes')
            if classes:
                return list(classes)
            with DefaultScope.overwrite_default_scope('detkit'):
                cls = DATASETS.get(dataset['type'])
            classes = (getattr(cls, 'METAINFO', None) or {}).get('classes')
            if classes:
                return list(classes)
    return ['object']


def write_dummy_coco(path: str, classes: Sequence[str]) -> str:
    """A COCO annotation file with one 640x480 image and one box of the
    first class, categories numbered 1.. in ``classes`` order."""
    data = dict(
        images=[dict(id=1, file_name='dummy.jpg', width=640, height=480)],
        annotations=[
            dict(id=1, image_id=1, category_id=1, bbox=[10, 20, 100, 80],
                 area=8000, iscrowd=0)
        ],
        categories=[dict(id=i + 1, name=c) for i, c in enumerate(classes)])
    with open(path, 'w') as f:
        json.dump(data, f)
    return path


def _dummy_datasets(dataset_cfg, ann_file):
    """Point every COCO-json dataset at ``ann_file``; leave the others
    unloaded (``lazy_init``, and so the wrappers around them): their files
    are not read."""
    dataset_cfg = copy.deepcopy(dataset_cfg)

    def visit(node) -> bool:  # True when ``node`` stays unloaded
        children = ([node['dataset']] if 'dataset' in node else list(
            node.get('datasets', [])))
        if children:
            lazy = any([visit(child) for child in children])
        elif str(node.get('ann_file', '')).endswith('.json'):
            node['ann_file'] = ann_file
            # Serialising calls gc.collect(), 0.25 s a dataset, for nothing.
            node['serialize_data'] = False
            lazy = False
        else:
            lazy = True
        if lazy:
            node['lazy_init'] = True
        return lazy

    visit(dataset_cfg)
    return dataset_cfg


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
    for name, loader in _dataloaders(cfg):
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
        for name, loader in _dataloaders(cfg):
            for key in ('sampler', 'batch_sampler'):
                kind = (loader.get(key) or {}).get('type')
                if kind is not None and DATA_SAMPLERS.get(kind) is None:
                    raise KeyError(f'{name}.{key}: {kind!r} is not in the '
                                   'data sampler registry')
            DATASETS.build(_dummy_datasets(loader['dataset'], ann_file))


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
            _dataset_classes(cfg)))
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
    for name, loader in _dataloaders(cfg):
        for dataset in innermost_datasets(loader['dataset']):
            classes = (dataset.get('metainfo') or {}).get('classes')
            if classes is None:
                from detkit.registry import DATASETS
                with DefaultScope.overwrite_default_scope('detkit'):
                    cls = DATASETS.get(dataset['type'])
                classes = (getattr(cls, 'METAINFO', None) or {}).get(
                    'classes')
            check_num_classes(model, classes, name.split('_')[0])


def _check_keys(model, key_list):
    problems = compare_keys(state_dict_keys(model), read_key_list(key_list))
    if problems:
        raise ValueError('; '.join(problems))


def find_configs(root: str,
                 folders: Optional[Sequence[str]] = None) -> List[str]:
    """Whole config files under ``root`` (paths relative to it, sorted).

    ``folders`` picks method folders of a config tree; by default the four
    detkit supports when ``root`` has them, else every folder. Files under
    ``_base_/`` and ``common/`` are pieces, never listed.
    """
    if osp.isfile(root):
        return [osp.basename(root)]
    if folders is None:
        present = [f for f in DEFAULT_FOLDERS if osp.isdir(osp.join(root, f))]
        folders = present or None
    patterns = ([osp.join(root, f, '**', '*.py') for f in folders]
                if folders else [osp.join(root, '**', '*.py')])
    found = set()
    for pattern in patterns:
        for path in glob.glob(pattern, recursive=True):
            rel = osp.relpath(path, root)
            if rel.split(os.sep)[0] not in FRAGMENT_FOLDERS:
                found.add(rel)
    return sorted(found)


def key_list_for(compat_dir: Optional[str], rel_path: str) -> Optional[str]:
    """``compat_dir/<folder>/<name>.txt`` for ``<folder>/<name>.py``."""
    if compat_dir is None:
        return None
    return osp.join(compat_dir, osp.splitext(rel_path)[0] + '.txt')


def check_tree(root: str,
               folders: Optional[Sequence[str]] = None,
               compat_dir: Optional[str] = None) -> List[CheckResult]:
    """:func:`check_config` for every config :func:`find_configs` lists."""
    if osp.isfile(root):
        return [check_config(root, None, osp.basename(root))]
    return [
        check_config(osp.join(root, rel), key_list_for(compat_dir, rel), rel)
        for rel in find_configs(root, folders)
    ]


def format_table(results: Sequence[CheckResult]) -> str:
    """A plain-text table: config, result, model keys, reason."""
    rows = [('config', 'result', 'keys', 'reason')]
    for r in results:
        status = 'skipped' if r.skipped else ('builds' if r.ok else 'FAILS')
        keys = '' if r.num_keys is None else str(r.num_keys)
        if r.num_keys is not None and r.key_list is not None:
            differ = any(stage == 'keys' for stage, _ in r.failures)
            keys += ' (differ)' if differ else ' (match)'
        rows.append((r.config, status, keys, r.reason))
    widths = [max(len(row[i]) for row in rows) for i in range(3)]
    lines = []
    for num, row in enumerate(rows):
        lines.append('  '.join(cell.ljust(w)
                               for cell, w in zip(row[:3], widths)) + '  ' +
                     row[3])
        if num == 0:
            lines.append('  '.join('-' * w for w in widths) + '  ' + '-' * 6)
    checked = [r for r in results if not r.skipped]
    ok = sum(r.ok for r in checked)
    no_list = sum(any(n.startswith('no key list') for n in r.notes)
                  for r in checked)
    lines.append(f'{ok} of {len(checked)} configs build'
                 + (' and match their key lists'
                    if no_list or any(r.key_list for r in checked) else '')
                 + f'; {len(checked) - ok} fail'
                 + (f'; {no_list} without a key list' if no_list else '')
                 + (f'; {len(results) - len(checked)} skipped'
                    if len(results) > len(checked) else ''))
    return '\n'.join(line.rstrip() for line in lines)
