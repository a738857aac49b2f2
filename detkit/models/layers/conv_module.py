"""Conv -> norm -> activation blocks, with mmcv's parameter names.

mmdetection checkpoints name a block's parts ``conv``, ``bn`` / ``gn`` and
(parameter-free) ``activate``; detkit keeps those names so checkpoints load
with ``strict=True``.
"""
import torch.nn as nn

_NORMS = {
    'BN': (nn.BatchNorm2d, 'bn'),
    'BN2d': (nn.BatchNorm2d, 'bn'),
    'BN1d': (nn.BatchNorm1d, 'bn'),
    'SyncBN': (nn.SyncBatchNorm, 'bn'),
    'GN': (nn.GroupNorm, 'gn'),
    'LN': (nn.LayerNorm, 'ln'),
    'IN': (nn.InstanceNorm2d, 'in'),
}

_ACTS = {
    'ReLU': nn.ReLU,
    'ReLU6': nn.ReLU6,
    'LeakyReLU': nn.LeakyReLU,
    'SiLU': nn.SiLU,
    'Swish': nn.SiLU,
    'GELU': nn.GELU,
    'Sigmoid': nn.Sigmoid,
    'HSwish': nn.Hardswish,
    'HSigmoid': nn.Hardsigmoid,
}


def build_norm_layer(cfg: dict, num_features: int, postfix=''):
    """Build a normalisation layer from ``cfg`` (``type`` in BN, SyncBN, GN,
    LN, IN; GN needs ``num_groups``; ``requires_grad`` freezes it).

    Returns:
        tuple: ``(name, layer)``, the name being ``bn``/``gn``/... plus
        ``postfix`` (``bn1``), as mmcv names them.
    """
    cfg = dict(cfg)
    layer_type = cfg.pop('type', None)
    if layer_type not in _NORMS:
        raise KeyError(f'norm_cfg type {layer_type!r} is not supported; '
                       f'choose one of {sorted(_NORMS)}')
    layer_cls, abbr = _NORMS[layer_type]
    requires_grad = cfg.pop('requires_grad', True)
    if layer_type == 'GN':
        if 'num_groups' not in cfg:
            raise KeyError("norm_cfg with type='GN' needs 'num_groups'")
        layer = layer_cls(num_channels=num_features, **cfg)
    else:
        cfg.setdefault('eps', 1e-5)
        layer = layer_cls(num_features, **cfg)
    for param in layer.parameters():
        param.requires_grad = requires_grad
    return f'{abbr}{postfix}', layer


def build_activation_layer(cfg: dict) -> nn.Module:
    """Build an activation from ``cfg`` (``type`` in ReLU, ReLU6, LeakyReLU,
    SiLU/Swish, GELU, Sigmoid, HSwish, HSigmoid)."""
    cfg = dict(cfg)
    act_type = cfg.pop('type', None)
    if act_type not in _ACTS:
        raise KeyError(f'act_cfg type {act_type!r} is not supported; '
                       f'choose one of {sorted(_ACTS)}')
    return _ACTS[act_type](**cfg)


class ConvModule(nn.Module):
    """``conv`` (+ ``bn``/``gn``) (+ activation), in that order.

    Args:
        bias: ``'auto'`` adds a bias only when there is no norm layer.
        norm_cfg: e.g. ``dict(type='BN')``, ``dict(type='GN',
            num_groups=32)``; None for no norm.
        act_cfg: e.g. ``dict(type='ReLU')``; None for no activation.
        inplace: in-place activation (ReLU family).
    """

    def __init__(self,
                 in_channels: int,
                 out_channels: int,
                 kernel_size,
                 stride=1,
                 padding=0,
                 dilation=1,
                 groups: int = 1,
                 bias='auto',
                 conv_cfg=None,
                 norm_cfg=None,
                 act_cfg=dict(type='ReLU'),
                 inplace: bool = True):
        super().__init__()
        if conv_cfg is not None and conv_cfg.get('type', 'Conv2d') not in (
                'Conv2d', 'Conv'):
            raise KeyError(f'conv_cfg type {conv_cfg["type"]!r} is not '
                           "supported; only 'Conv2d'")
        self.with_norm = norm_cfg is not None
        self.with_activation = act_cfg is not None
        if bias == 'auto':
            bias = not self.with_norm
        self.conv = nn.Conv2d(
            in_channels,
            out_channels,
            kernel_size,
            stride=stride,
            padding=padding,
            dilation=dilation,
            groups=groups,
            bias=bias)
        self.norm_name = None
        if self.with_norm:
            self.norm_name, norm = build_norm_layer(norm_cfg, out_channels)
            self.add_module(self.norm_name, norm)
        if self.with_activation:
            act_cfg = dict(act_cfg)
            if act_cfg['type'] in ('ReLU', 'ReLU6', 'LeakyReLU', 'SiLU',
                                   'Swish', 'HSwish', 'HSigmoid'):
                act_cfg.setdefault('inplace', inplace)
            self.activate = build_activation_layer(act_cfg)

    @property
    def norm(self):
        return getattr(self, self.norm_name) if self.norm_name else None

    def forward(self, x):
        x = self.conv(x)
        if self.norm_name is not None:
            x = getattr(self, self.norm_name)(x)
        if self.with_activation:
            x = self.activate(x)
        return x


class DepthwiseSeparableConvModule(nn.Module):
    """``depthwise_conv`` (k x k, groups = in_channels) then
    ``pointwise_conv`` (1 x 1), each a :class:`ConvModule` with the same
    norm and activation (SSDLite's extra layers)."""

    def __init__(self,
                 in_channels: int,
                 out_channels: int,
                 kernel_size,
                 stride=1,
                 padding=0,
                 dilation=1,
                 norm_cfg=None,
                 act_cfg=dict(type='ReLU'),
                 **kwargs):
        super().__init__()
        self.depthwise_conv = ConvModule(
            in_channels,
            in_channels,
            kernel_size,
            stride=stride,
            padding=padding,
            dilation=dilation,
            groups=in_channels,
            norm_cfg=norm_cfg,
            act_cfg=act_cfg,
            **kwargs)
        self.pointwise_conv = ConvModule(
            in_channels,
            out_channels,
            1,
            norm_cfg=norm_cfg,
            act_cfg=act_cfg,
            **kwargs)

    def forward(self, x):
        return self.pointwise_conv(self.depthwise_conv(x))
