"""detkit's registries: children of mmengine's root registries, scope ``detkit``.

Every component a config can name is registered in one of these. Building
from a config inside the ``detkit`` scope (``default_scope = 'detkit'``)
first imports the ``locations`` of the registry, so a config never has to
import anything; names that detkit does not define (``SGD``,
``MultiStepLR``, ``CheckpointHook``, ...) fall through to mmengine's root.
"""
from mmengine.registry import DATA_SAMPLERS as MMENGINE_DATA_SAMPLERS
from mmengine.registry import DATASETS as MMENGINE_DATASETS
from mmengine.registry import EVALUATOR as MMENGINE_EVALUATOR
from mmengine.registry import FUNCTIONS as MMENGINE_FUNCTIONS
from mmengine.registry import HOOKS as MMENGINE_HOOKS
from mmengine.registry import INFERENCERS as MMENGINE_INFERENCERS
from mmengine.registry import LOG_PROCESSORS as MMENGINE_LOG_PROCESSORS
from mmengine.registry import LOOPS as MMENGINE_LOOPS
from mmengine.registry import METRICS as MMENGINE_METRICS
from mmengine.registry import MODEL_WRAPPERS as MMENGINE_MODEL_WRAPPERS
from mmengine.registry import MODELS as MMENGINE_MODELS
from mmengine.registry import \
    OPTIM_WRAPPER_CONSTRUCTORS as MMENGINE_OPTIM_WRAPPER_CONSTRUCTORS
from mmengine.registry import OPTIM_WRAPPERS as MMENGINE_OPTIM_WRAPPERS
from mmengine.registry import OPTIMIZERS as MMENGINE_OPTIMIZERS
from mmengine.registry import PARAM_SCHEDULERS as MMENGINE_PARAM_SCHEDULERS
from mmengine.registry import \
    RUNNER_CONSTRUCTORS as MMENGINE_RUNNER_CONSTRUCTORS
from mmengine.registry import RUNNERS as MMENGINE_RUNNERS
from mmengine.registry import TASK_UTILS as MMENGINE_TASK_UTILS
from mmengine.registry import TRANSFORMS as MMENGINE_TRANSFORMS
from mmengine.registry import VISBACKENDS as MMENGINE_VISBACKENDS
from mmengine.registry import VISUALIZERS as MMENGINE_VISUALIZERS
from mmengine.registry import \
    WEIGHT_INITIALIZERS as MMENGINE_WEIGHT_INITIALIZERS
import difflib
import inspect

from mmengine.registry import Registry

SCOPE = 'detkit'


def _all_names(registry):
    """Names visible from ``registry``: its own, its children's (scoped) and
    its ancestors'."""
    names = set()
    root = registry
    while root.parent is not None:
        root = root.parent
    stack = [root]
    while stack:
        reg = stack.pop()
        names.update(reg.module_dict)
        stack.extend(reg.children.values())
    return sorted(names)


def _accepted_keys(cls):
    """Keyword names ``cls(...)`` accepts, or None when it takes any.

    A detkit constructor with ``**kwargs`` hands them to its parent
    (``RetinaHead`` -> ``AnchorHead``), so the parents' names count too;
    ``**kwargs`` elsewhere may mean anything, and nothing is checked.
    """
    accepted = []
    for klass in cls.__mro__:
        init = klass.__dict__.get('__init__')
        if init is None:
            continue
        try:
            params = inspect.signature(init).parameters
        except (TypeError, ValueError):
            return None
        accepted += [
            n for n, p in params.items() if n != 'self' and n not in accepted
            and p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)
        ]
        if not any(p.kind == p.VAR_KEYWORD for p in params.values()):
            return accepted
        if not klass.__module__.startswith('detkit.'):
            return None
    return None


def _check_kwargs(cls, cfg, registry):
    """Reject keys the constructor does not take, naming the closest ones
    (``num_clases`` -> ``num_classes``), before anything is built."""
    if not inspect.isclass(cls):
        return
    accepted = _accepted_keys(cls)
    if accepted is None:
        return
    for key in cfg:
        if key in ('type', '_scope_') or key in accepted:
            continue
        close = difflib.get_close_matches(key, accepted, n=3, cutoff=0.6)
        hint = (f' Did you mean {", ".join(repr(c) for c in close)}?'
                if close else f' It accepts: {", ".join(accepted)}.')
        raise TypeError(
            f'{cls.__name__} (from the {registry.name} registry) got an '
            f'unexpected config key {key!r}.{hint}')


def _build_with_suggestions(parent_build):
    """Wrap a build function so that an unknown ``type`` or a misspelled
    key fails with the registry, the bad name and the closest names."""

    def build(cfg, registry, default_args=None):
        if isinstance(cfg, dict) and 'type' in cfg and isinstance(
                cfg['type'], str):
            with registry.switch_scope_and_registry(
                    cfg.get('_scope_')) as reg:
                cls = reg.get(cfg['type'])
                if cls is None:
                    close = difflib.get_close_matches(
                        cfg['type'], _all_names(reg), n=5, cutoff=0.5)
                    hint = (f' Closest registered names: {", ".join(close)}.'
                            if close else '')
                    raise KeyError(
                        f'{cfg["type"]!r} is not in the {reg.name} registry '
                        f'(scope {reg.scope!r}).{hint}')
                _check_kwargs(cls, cfg, reg)
        return parent_build(cfg, registry=registry, default_args=default_args)

    return build


def _child(name, parent, locations):
    return Registry(
        name,
        parent=parent,
        scope=SCOPE,
        locations=locations,
        build_func=_build_with_suggestions(parent.build_func))


# Runner and its construction.
RUNNERS = _child('runner', MMENGINE_RUNNERS, ['detkit.engine'])
RUNNER_CONSTRUCTORS = _child('runner constructor',
                             MMENGINE_RUNNER_CONSTRUCTORS, ['detkit.engine'])
LOOPS = _child('loop', MMENGINE_LOOPS, ['detkit.engine'])
HOOKS = _child('hook', MMENGINE_HOOKS,
               ['detkit.engine', 'detkit.visualization'])

# Data.
DATASETS = _child('dataset', MMENGINE_DATASETS, ['detkit.datasets'])
DATA_SAMPLERS = _child('data sampler', MMENGINE_DATA_SAMPLERS,
                       ['detkit.datasets'])
TRANSFORMS = _child('transform', MMENGINE_TRANSFORMS,
                    ['detkit.datasets.transforms'])

# Models and their parts.
MODELS = _child('model', MMENGINE_MODELS, ['detkit.models'])
MODEL_WRAPPERS = _child('model_wrapper', MMENGINE_MODEL_WRAPPERS,
                        ['detkit.engine'])
WEIGHT_INITIALIZERS = _child('weight initializer',
                             MMENGINE_WEIGHT_INITIALIZERS, ['detkit.models'])
# Anchor generators, assigners, samplers and box coders.
TASK_UTILS = _child('task util', MMENGINE_TASK_UTILS,
                    ['detkit.models.task_modules'])

# Optimisation.
OPTIMIZERS = _child('optimizer', MMENGINE_OPTIMIZERS, ['detkit.engine'])
OPTIM_WRAPPERS = _child('optim_wrapper', MMENGINE_OPTIM_WRAPPERS,
                        ['detkit.engine'])
OPTIM_WRAPPER_CONSTRUCTORS = _child('optimizer wrapper constructor',
                                    MMENGINE_OPTIM_WRAPPER_CONSTRUCTORS,
                                    ['detkit.engine'])
PARAM_SCHEDULERS = _child('parameter scheduler', MMENGINE_PARAM_SCHEDULERS,
                          ['detkit.engine'])

# Evaluation.
METRICS = _child('metric', MMENGINE_METRICS, ['detkit.evaluation'])
EVALUATOR = _child('evaluator', MMENGINE_EVALUATOR, ['detkit.evaluation'])

# Visualisation and logging.
VISUALIZERS = _child('visualizer', MMENGINE_VISUALIZERS,
                     ['detkit.visualization'])
VISBACKENDS = _child('vis_backend', MMENGINE_VISBACKENDS,
                     ['detkit.visualization'])
LOG_PROCESSORS = _child('log_processor', MMENGINE_LOG_PROCESSORS,
                        ['detkit.engine'])

INFERENCERS = _child('inferencer', MMENGINE_INFERENCERS, ['detkit.apis'])
FUNCTIONS = _child('function', MMENGINE_FUNCTIONS, ['detkit.datasets'])
