"""Engine: the runner, checkpoint safety, CPU distributed helpers, hooks.

Importing this package registers :class:`DetRunner`, detkit's hooks and the
safe checkpoint loaders (which replace mmengine's for local files, http(s),
``torchvision://`` and ``open-mmlab://``).
"""
from . import checkpoint_loaders  # noqa: F401  (registers safe loaders)
from .checkpoint import (LoadReport, NeutralisedObjectsWarning, atomic_write,
                         load_checkpoint, load_checkpoint_file,
                         load_model_weights, load_state_dict,
                         save_checkpoint_file)
from .dist import DetDistributedDataParallel
from .hooks import BrokenImageReportHook, DetCheckpointHook
from .message_hub_state import message_hub_from_plain, message_hub_to_plain
from .plain_data import to_plain
from .runner import DetRunner
from .safe_unpickler import NeutralisedObject, RestrictedPickleModule
from .speedups import (channels_last_enabled, foreach_optim_wrapper_cfg,
                       set_memory_format, training_speedups)

__all__ = [
    'DetRunner', 'DetCheckpointHook', 'BrokenImageReportHook',
    'load_checkpoint', 'load_checkpoint_file', 'load_model_weights',
    'load_state_dict', 'save_checkpoint_file', 'atomic_write', 'to_plain',
    'LoadReport', 'NeutralisedObjectsWarning', 'NeutralisedObject',
    'RestrictedPickleModule', 'message_hub_to_plain', 'message_hub_from_plain',
    'DetDistributedDataParallel', 'channels_last_enabled',
    'foreach_optim_wrapper_cfg', 'set_memory_format', 'training_speedups'
]
