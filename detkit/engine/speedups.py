"""What :class:`~detkit.engine.DetRunner` does by default to train,
validate and test faster, and how to switch it off.

* **Channels-last memory format** (top-level config key ``channels_last``,
  default True; ``tools/test.py --no-channels-last``): the model's 4-d
  weights, and so every convolution's activations, are stored NHWC, which
  oneDNN's CPU convolutions and cuDNN's tensor-core kernels prefer. The
  convolutions then sum in another order, so losses and predictions equal
  NCHW's only up to float rounding (about 1e-6 relative; COCO mAP the same
  to 3 decimals, tested). ``channels_last=False`` keeps NCHW, the layout
  whose arithmetic matches mmdetection's bit for bit.
* **Multi-tensor optimizer step**: a torch optimizer that takes
  ``foreach`` (SGD, Adam, AdamW, ...) gets ``foreach=True`` unless the
  config sets ``foreach`` or ``fused`` itself. torch already does this on
  CUDA; on the CPU it replaces a Python loop over every parameter by one
  multi-tensor call per operation, with bitwise the same update (tested).
  ``fused=True`` would be faster still but rounds differently.

The model is converted before the runner wraps it (DDP then builds its
gradient buckets in the same layout); checkpoints hold the same values
either way, and load into a model of either layout.
"""
import copy
import inspect

import torch


def channels_last_enabled(cfg) -> bool:
    """The config's ``channels_last`` (True when absent); anything but a
    bool is refused with the key named."""
    value = cfg.get('channels_last', True) if cfg is not None else True
    if not isinstance(value, bool):
        raise TypeError(f'channels_last={value!r}: the config key '
                        'channels_last takes True (channels-last memory '
                        'format, the default) or False (NCHW, mmdetection\'s '
                        'arithmetic)')
    return value


def set_memory_format(model: torch.nn.Module, channels_last: bool = True):
    """Convert ``model``'s 4-d parameters and buffers to channels-last
    (``channels_last=True``) or back to contiguous NCHW, in place (the
    parameter objects stay the same); returns the model."""
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    return model.to(memory_format=fmt)


def _optimizer_class(optimizer_cfg):
    kind = optimizer_cfg.get('type')
    if inspect.isclass(kind):
        return kind
    if not isinstance(kind, str):
        return None
    from mmengine.registry import OPTIMIZERS
    try:
        return OPTIMIZERS.get(kind)
    except KeyError:
        return None


def foreach_optim_wrapper_cfg(optim_wrapper_cfg):
    """A copy of ``optim_wrapper_cfg`` whose ``optimizer`` has
    ``foreach=True`` when its class takes ``foreach`` and the config sets
    neither ``foreach`` nor ``fused``; anything else (a built optimizer, an
    ``OptimWrapperDict`` config) is returned as it is."""
    if not isinstance(optim_wrapper_cfg, dict):
        return optim_wrapper_cfg
    optimizer = optim_wrapper_cfg.get('optimizer')
    if not isinstance(optimizer, dict) or 'foreach' in optimizer or \
            'fused' in optimizer:
        return optim_wrapper_cfg
    cls = _optimizer_class(optimizer)
    if cls is None or 'foreach' not in inspect.signature(cls).parameters:
        return optim_wrapper_cfg
    cfg = copy.copy(optim_wrapper_cfg)
    cfg['optimizer'] = dict(optimizer, foreach=True)
    return cfg


def training_speedups(cfg, model, optim_wrapper_cfg=None):
    """What DetRunner applies before training: the model in the config's
    memory format (:func:`channels_last_enabled`) and the foreach
    optimizer config; returns ``(model, optim_wrapper_cfg)``."""
    set_memory_format(model, channels_last_enabled(cfg))
    return model, foreach_optim_wrapper_cfg(optim_wrapper_cfg)
