"""Construction-time checks of how a detector's parts fit together.

A wrong ``neck.in_channels`` otherwise surfaces as a conv shape error deep
inside the first forward pass (``expected input[2, 512, 25, 25] to have
256 channels``) that names neither the config key nor the right value.
"""
from typing import List, Mapping, Optional

from torch import nn


def _last_conv_channels(module: nn.Module) -> Optional[int]:
    """Output channels of the last ``Conv2d`` registered in ``module``:
    the channels of what the module returns, for blocks that end with a
    conv (+ norm/activation). ResNet's downsample convs come before the
    last block's convs and have the same width anyway."""
    channels = None
    for m in module.modules():
        if isinstance(m, nn.Conv2d):
            channels = m.out_channels
    return channels


def backbone_out_channels(backbone: nn.Module) -> Optional[List[int]]:
    """Channels of each feature map ``backbone`` returns, read from its
    built layers; None when the backbone type is not known here.

    Known: ResNet (``res_layers`` at ``out_indices``), MobileNetV2
    (``layers`` at ``out_indices``, 7 being ``conv2``), SSDVGG (the last
    conv at or before each of ``out_feature_indices``), and any backbone
    with an ``out_channels`` list.
    """
    if hasattr(backbone, 'res_layers') and hasattr(backbone, 'out_indices'):
        stages = [getattr(backbone, backbone.res_layers[i])
                  for i in backbone.out_indices]
    elif hasattr(backbone, 'layers') and hasattr(backbone, 'out_indices'):
        stages = [getattr(backbone, backbone.layers[i])
                  for i in backbone.out_indices]
    elif hasattr(backbone, 'features') and hasattr(backbone,
                                                   'out_feature_indices'):
        stages = [backbone.features[:i + 1]
                  for i in backbone.out_feature_indices]
    else:
        channels = getattr(backbone, 'out_channels', None)
        if isinstance(channels, (list, tuple)) and all(
                isinstance(c, int) for c in channels):
            return list(channels)
        return None
    channels = [_last_conv_channels(stage) for stage in stages]
    return None if None in channels else channels


def describe_backbone(backbone: nn.Module) -> str:
    """``'ResNet-50, out_indices=(1, 2, 3)'``: the type, its depth, and
    the settings that choose its outputs."""
    name = type(backbone).__name__
    depth = getattr(backbone, 'depth', None)
    if depth is None and name == 'SSDVGG':
        # VGG-n counts its convs and 3 FC layers; SSD's has 2 (fc6, fc7).
        depth = sum(isinstance(m, nn.Conv2d) for m in backbone.features) + 1
    parts = [f'{name}-{depth}' if depth is not None else name]
    widen = getattr(backbone, 'widen_factor', None)
    if widen is not None:
        parts.append(f'widen_factor={widen}')
    for key in ('out_indices', 'out_feature_indices'):
        value = getattr(backbone, key, None)
        if value is not None and not (key == 'out_indices'
                                      and name == 'SSDVGG'):
            parts.append(f'{key}={tuple(value)}')
    return ', '.join(parts)


def check_neck_in_channels(backbone: nn.Module, neck) -> None:
    """Raise ``ValueError`` when the neck's ``in_channels`` differ from the
    channels of the maps the backbone outputs.

    Args:
        backbone: the built backbone.
        neck: the built neck or its config dict; None (no neck), a neck
            without ``in_channels`` or a backbone of unknown layout is not
            checked.
    """
    if neck is None:
        return
    if isinstance(neck, Mapping):
        expected = neck.get('in_channels')
    else:
        expected = getattr(neck, 'in_channels', None)
    if not isinstance(expected, (list, tuple)):
        return
    actual = backbone_out_channels(backbone)
    if actual is None or list(expected) == actual:
        return
    raise ValueError(
        f'model.neck.in_channels is {list(expected)}, but the backbone '
        f'({describe_backbone(backbone)}) outputs {actual} channels; set '
        f'model.neck.in_channels={actual}')
