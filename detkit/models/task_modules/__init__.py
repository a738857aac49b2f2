"""Anchor generators, assigners, samplers and box coders (``TASK_UTILS``)."""
from . import assigners, coders, prior_generators, samplers

__all__ = ['assigners', 'coders', 'prior_generators', 'samplers']
