"""Samplers and their results, registered in ``TASK_UTILS``."""
from .ohem_sampler import OHEMSampler
from .pseudo_sampler import PseudoSampler
from .random_sampler import RandomSampler
from .sampling_result import BatchSamplingResult, SamplingResult, prepend_gts

__all__ = [
    'OHEMSampler', 'PseudoSampler', 'RandomSampler', 'SamplingResult',
    'BatchSamplingResult', 'prepend_gts'
]
