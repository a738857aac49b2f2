"""Fold eval-mode BatchNorm into the convolution before it (inference only).

A BatchNorm layer in eval mode is a per-channel affine map
``y = (x - mean) / sqrt(var + eps) * gamma + beta``. Applied to the output of
a convolution ``x = W * in + b`` it can be folded into that convolution:

    scale = gamma / sqrt(var + eps)
    W'    = W * scale            (per output channel)
    b'    = (b - mean) * scale + beta

so the network computes the same function (up to float rounding) with one
pass over each activation fewer. The norm is replaced by ``nn.Identity``
under the same attribute name, so code that reaches it through ``getattr``
(ResNet's ``norm1_name``) keeps working.

Which norm follows which conv is read from registration order: a ``Conv2d``
child immediately followed by a ``BatchNorm2d`` child of the same module
with as many features as the conv has output channels. Every module in
detkit that pairs a conv with a norm (``ConvModule``, ResNet blocks and
stems, ``downsample`` Sequentials, MobileNetV2) registers them in that
order and applies the norm directly to the conv's output.

Only norms in eval mode are folded (frozen / ``norm_eval`` BatchNorm, or any
BatchNorm after ``model.eval()``): a BatchNorm in training mode normalises
with batch statistics and cannot be folded. The folded model is for
inference: its ``state_dict`` no longer has the norm keys, and the folded
weights do not train like the separate ones would.
"""
import torch
import torch.nn as nn
from torch.nn.modules.batchnorm import _BatchNorm


def fuse_conv_bn_weights(conv: nn.Conv2d, bn: _BatchNorm) -> None:
    """Fold ``bn`` (eval mode, running statistics) into ``conv`` in place:
    the conv then computes ``bn(conv(x))`` and gains a bias if it had
    none."""
    with torch.no_grad():
        weight = conv.weight
        var_rsqrt = torch.rsqrt(bn.running_var.to(torch.float64) + bn.eps)
        scale = var_rsqrt
        if bn.weight is not None:
            scale = scale * bn.weight.to(torch.float64)
        bias = (conv.bias.to(torch.float64) if conv.bias is not None else
                torch.zeros_like(scale))
        bias = (bias - bn.running_mean.to(torch.float64)) * scale
        if bn.bias is not None:
            bias = bias + bn.bias.to(torch.float64)
        # Computing in float64 keeps the folded weights within one rounding
        # of the exact product.
        new_weight = weight.to(torch.float64) * scale.reshape(
            -1, *([1] * (weight.dim() - 1)))
        conv.weight = nn.Parameter(
            new_weight.to(weight.dtype), requires_grad=weight.requires_grad)
        conv.bias = nn.Parameter(
            bias.to(weight.dtype), requires_grad=weight.requires_grad)


def _foldable(conv: nn.Module, bn: nn.Module) -> bool:
    return (isinstance(conv, nn.Conv2d) and isinstance(bn, nn.BatchNorm2d)
            and not bn.training and bn.track_running_stats
            and bn.running_mean is not None
            and bn.num_features == conv.out_channels)


def fuse_conv_bn(module: nn.Module) -> nn.Module:
    """Fold every eval-mode ``BatchNorm2d`` that directly follows a
    ``Conv2d`` (see the module docstring) into that conv, recursively.

    Args:
        module: a model, e.g. from :func:`detkit.apis.init_detector` (eval
            mode).

    Returns:
        The same module, modified in place (norms replaced by
        ``nn.Identity``). Its outputs equal the unfolded ones up to float
        rounding.
    """
    last_conv = None
    for name, child in list(module.named_children()):
        if last_conv is not None and _foldable(last_conv, child):
            fuse_conv_bn_weights(last_conv, child)
            setattr(module, name, nn.Identity())
            last_conv = None
            continue
        if isinstance(child, nn.Conv2d):
            last_conv = child
            continue
        last_conv = None
        fuse_conv_bn(child)
    return module


def count_batchnorms(module: nn.Module) -> int:
    """Number of BatchNorm layers left in ``module`` (0 after folding an
    eval-mode model whose norms all follow convs)."""
    return sum(isinstance(m, _BatchNorm) for m in module.modules())
