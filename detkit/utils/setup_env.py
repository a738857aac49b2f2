"""``register_all_modules``: what an mmdetection script calls first."""
import datetime
import importlib
import warnings

from mmengine.registry import DefaultScope

from .scope import DETKIT_SCOPE

# Every package whose import registers components (models, task utils,
# transforms, datasets, metrics, hooks, runner, visualizers, inferencers).
REGISTERING_PACKAGES = ('detkit.datasets', 'detkit.engine',
                        'detkit.evaluation', 'detkit.models',
                        'detkit.visualization', 'detkit.apis')


def register_all_modules(init_default_scope: bool = True) -> None:
    """Import every detkit module that registers something, so that the
    registries are complete before anything is built; with
    ``init_default_scope`` also make ``'detkit'`` mmengine's default scope.

    As in mmdetection: when no ``DefaultScope`` exists yet (or none named
    ``'detkit'``), one named ``'detkit'`` is created and made current; when
    the current one has another scope name (say ``'mmengine'``), a warning
    says that it is overridden and a new ``'detkit'`` instance with a
    unique name becomes current. Pass ``init_default_scope=False`` to only
    register.
    """
    for name in REGISTERING_PACKAGES:
        importlib.import_module(name)
    if not init_default_scope:
        return
    current = DefaultScope.get_current_instance()
    if current is None or not DefaultScope.check_instance_created(
            DETKIT_SCOPE):
        DefaultScope.get_instance(DETKIT_SCOPE, scope_name=DETKIT_SCOPE)
        return
    if current.scope_name != DETKIT_SCOPE:
        warnings.warn(
            f'The current default scope is {current.scope_name!r}, not '
            f"'detkit': register_all_modules() makes 'detkit' the default "
            'scope. Pass init_default_scope=False to keep the current one.')
        # A new instance name: DefaultScope instances are unique by name.
        DefaultScope.get_instance(
            f'{DETKIT_SCOPE}-{datetime.datetime.now()}',
            scope_name=DETKIT_SCOPE)
