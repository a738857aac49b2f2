"""Data preprocessors: turn collated samples into a model-ready batch."""
from .data_preprocessor import DetDataPreprocessor

__all__ = ['DetDataPreprocessor']
