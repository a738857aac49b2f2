"""Helpers for users and tools: registering everything
(:func:`register_all_modules`), running mmdetection configs in detkit's
scope (:func:`to_detkit_scope`) and checking that configs build
(:mod:`~detkit.utils.config_check` for one, :mod:`~detkit.utils.config_tree`
for a tree, :mod:`~detkit.utils.key_lists` for state-dict key lists)."""
from .scope import to_detkit_scope
from .setup_env import register_all_modules

__all__ = ['register_all_modules', 'to_detkit_scope']
