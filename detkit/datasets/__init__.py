"""Datasets, samplers and transforms."""
from . import transforms

__all__ = ['transforms']
