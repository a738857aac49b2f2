"""Scale and the GN ConvModules of FCOS / ATSS heads: mmdetection's
parameter names and shapes, forward and gradient by hand."""
import math

import torch
from conftest import read_compat

from detkit.models.layers import ConvModule, Scale
from detkit.registry import MODELS


def test_parameter_name_shape_and_default():
    scale = MODELS.build(dict(type='Scale'))
    assert list(scale.state_dict()) == ['scale']
    assert scale.scale.shape == () and scale.scale.dtype == torch.float32
    assert scale.scale.item() == 1.0
    assert Scale(scale=0.5).scale.item() == 0.5


def test_forward_and_gradient_by_hand():
    scale = Scale(2.5)
    x = torch.tensor([[1., -2.], [4., 0.]], requires_grad=True)
    out = scale(x)
    assert out.tolist() == [[2.5, -5.], [10., 0.]]
    out.sum().backward()
    assert scale.scale.grad.item() == 3.  # sum of x
    assert x.grad.tolist() == [[2.5, 2.5], [2.5, 2.5]]


def test_state_dict_keys_match_fcos_and_atss_checkpoints():
    for model in ('fcos_r50_fpn', 'atss_r50_fpn'):
        expected = {k: v for k, v in read_compat(model).items()
                    if k.startswith('bbox_head.scales.')}
        scales = torch.nn.ModuleList(Scale(1.0) for _ in range(5))
        ours = {
            f'bbox_head.scales.{k}':
            (tuple(v.shape), str(v.dtype).replace('torch.', ''))
            for k, v in scales.state_dict().items()
        }
        assert len(expected) == 5
        assert ours == expected


# The rest of an FCOS / ATSS head's layers: the stacked GN ConvModules.
GN = dict(type='GN', num_groups=32, requires_grad=True)


def test_gn_head_convs_match_fcos_and_atss_checkpoints():
    """``stacked_convs=4`` 3x3 ConvModules with ``norm_cfg=GN`` and
    ``conv_bias='auto'`` per branch: ``conv.weight`` and ``gn.weight`` /
    ``gn.bias``, no conv bias (a norm follows)."""
    head = torch.nn.Module()
    for branch in ('cls_convs', 'reg_convs'):
        setattr(head, branch, torch.nn.ModuleList(
            ConvModule(256, 256, 3, stride=1, padding=1, norm_cfg=GN,
                       bias='auto') for _ in range(4)))
    ours = {
        f'bbox_head.{k}': (tuple(v.shape), str(v.dtype).replace('torch.', ''))
        for k, v in head.state_dict().items()
    }
    for model in ('fcos_r50_fpn', 'atss_r50_fpn'):
        expected = {k: v for k, v in read_compat(model).items()
                    if k.startswith(('bbox_head.cls_convs.',
                                     'bbox_head.reg_convs.'))}
        assert len(expected) == 24
        assert ours == expected


def test_conv_bias_auto_and_gn_by_hand():
    assert ConvModule(4, 4, 3, norm_cfg=None).conv.bias is not None
    assert ConvModule(4, 4, 3, norm_cfg=dict(GN, num_groups=2)).conv.bias \
        is None
    assert ConvModule(4, 4, 3, norm_cfg=dict(GN, num_groups=2),
                      bias=True).conv.bias is not None
    frozen = ConvModule(4, 4, 1, norm_cfg=dict(GN, num_groups=2,
                                               requires_grad=False))
    assert not any(p.requires_grad for p in frozen.gn.parameters())
    # identity 1x1 conv, GN over 2 groups of 2 channels, no activation:
    # each group normalised to mean 0, variance 1 (eps 1e-5).
    m = ConvModule(4, 4, 1, norm_cfg=dict(GN, num_groups=2), act_cfg=None)
    assert isinstance(m.gn, torch.nn.GroupNorm) and m.gn.eps == 1e-5
    with torch.no_grad():
        m.conv.weight.copy_(torch.eye(4).view(4, 4, 1, 1))
    x = torch.tensor([1., 3., 5., 7., 0., 0., 0., 4.]).view(1, 4, 1, 2)
    out = m(x).view(2, 4)
    # group 0 = (1, 3, 5, 7): mean 4, variance 5
    torch.testing.assert_close(
        out[0], (torch.tensor([1., 3., 5., 7.]) - 4) / math.sqrt(5 + 1e-5))
    # group 1 = (0, 0, 0, 4): mean 1, variance 3
    torch.testing.assert_close(
        out[1], (torch.tensor([0., 0., 0., 4.]) - 1) / math.sqrt(3 + 1e-5))
