"""Data preprocessors: turn collated samples into a model-ready batch."""
from .batch_fixed_size_pad import BatchFixedSizePad
from .data_preprocessor import DetDataPreprocessor

__all__ = ['DetDataPreprocessor', 'BatchFixedSizePad']
