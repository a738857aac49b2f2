"""Run mmdetection's own config files in detkit's scope.

An mmdetection config says ``default_scope = 'mmdet'`` (from its
``_base_/default_runtime.py``), which would make mmengine look for the
``mmdet`` package's registries. detkit registers every component under the
same names, so such a config is built with detkit's registries instead:
:func:`to_detkit_scope` switches the scope, says so in one log line, and
rewrites the two other spellings of the scope a config may use
(``_scope_='mmdet'`` in a dict, ``type='mmdet.RetinaNet'``).

Every entry point that reads a config (``tools/train.py``, ``test.py``,
the analysis tools, ``init_detector``, ``DetInferencer``) calls it once,
right after loading.
"""
import logging
from typing import Optional

from mmengine.logging import print_log

DETKIT_SCOPE = 'detkit'
MMDET_SCOPE = 'mmdet'


def _rewrite_scopes(node) -> int:
    """Replace ``_scope_='mmdet'`` and ``type='mmdet.X'`` in place in
    nested dicts and lists; returns how many were replaced."""
    count = 0
    if isinstance(node, dict):
        if node.get('_scope_') == MMDET_SCOPE:
            node['_scope_'] = DETKIT_SCOPE
            count += 1
        kind = node.get('type')
        if isinstance(kind, str) and kind.startswith(MMDET_SCOPE + '.'):
            node['type'] = DETKIT_SCOPE + kind[len(MMDET_SCOPE):]
            count += 1
        for value in node.values():
            count += _rewrite_scopes(value)
    elif isinstance(node, (list, tuple)):
        for value in node:
            count += _rewrite_scopes(value)
    return count


def to_detkit_scope(cfg, source: Optional[str] = None, log: bool = True):
    """Make ``cfg`` (an mmengine ``Config``) build with detkit's registries.

    - no ``default_scope``: it becomes ``'detkit'`` (silently, as before);
    - ``default_scope='mmdet'``: it becomes ``'detkit'``, and one INFO line
      says so, naming ``source`` (the config file) when given;
    - ``_scope_='mmdet'`` / ``type='mmdet.X'`` anywhere in the config become
      ``'detkit'`` / ``'detkit.X'`` (counted in the same line).

    Any other scope (a downstream project's own) is left alone. Calling it
    again on the same config changes nothing and logs nothing; ``log=False``
    (for tools that report it their own way) never logs. Returns ``cfg``.
    """
    scope = cfg.get('default_scope')
    # Config.__getattr__ returns ConfigDicts; rewrite through the mapping
    # interface so nested dicts are edited in place.
    rewritten = 0
    for key in list(cfg.keys()):
        rewritten += _rewrite_scopes(cfg[key])
    if scope is None:
        cfg.default_scope = DETKIT_SCOPE
    elif scope == MMDET_SCOPE:
        cfg.default_scope = DETKIT_SCOPE
    if log and (scope == MMDET_SCOPE or rewritten):
        name = source or getattr(cfg, 'filename', None) or 'the config'
        what = f"has default_scope={scope!r}" if scope == MMDET_SCOPE else \
            'names the mmdet scope'
        extra = (f' ({rewritten} _scope_/type entries naming mmdet rewritten)'
                 if rewritten else '')
        print_log(
            f'config {name} {what}; building it with detkit\'s registries '
            f"(scope 'detkit'){extra}",
            logger='current',
            level=logging.INFO)
    return cfg
