"""Helpers for users and tools: registering everything
(:func:`register_all_modules`), running mmdetection configs in detkit's
scope (:func:`to_detkit_scope`) and checking whole config trees
(:mod:`detkit.utils.config_check`)."""
from .scope import to_detkit_scope
from .setup_env import register_all_modules

__all__ = ['register_all_modules', 'to_detkit_scope']
