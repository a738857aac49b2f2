"""SSDNeck and L2Norm: checkpoint names for SSD300/512/SSDLite, level
sizes, the L2Norm formula, init."""
import pytest
import torch
import torch.nn as nn
from conftest import read_compat

from detkit.models.layers import DepthwiseSeparableConvModule
from detkit.models.necks import SSDNeck
from detkit.models.necks.ssd_neck import L2Norm
from detkit.registry import MODELS

SSD300_NECK = dict(
    type='SSDNeck',
    in_channels=(512, 1024),
    out_channels=(512, 1024, 512, 256, 256, 256),
    level_strides=(2, 2, 1, 1),
    level_paddings=(1, 1, 0, 0),
    l2_norm_scale=20)
SSD512_NECK = dict(
    type='SSDNeck',
    in_channels=(512, 1024),
    out_channels=(512, 1024, 512, 256, 256, 256, 256),
    level_strides=(2, 2, 2, 2, 1),
    level_paddings=(1, 1, 1, 1, 1),
    l2_norm_scale=20,
    last_kernel_size=4)
SSDLITE_NECK = dict(
    type='SSDNeck',
    in_channels=(96, 1280),
    out_channels=(96, 1280, 512, 256, 256, 128),
    level_strides=(2, 2, 2, 2),
    level_paddings=(1, 1, 1, 1),
    l2_norm_scale=None,
    use_depthwise=True,
    norm_cfg=dict(type='BN', eps=0.001, momentum=0.03),
    act_cfg=dict(type='ReLU6'),
    init_cfg=dict(type='TruncNormal', layer='Conv2d', std=0.03))
SSD_VGG = dict(type='SSDVGG', depth=16, out_feature_indices=(22, 34))
SSDLITE_BACKBONE = dict(
    type='MobileNetV2',
    out_indices=(4, 7),
    norm_cfg=dict(type='BN', eps=0.001, momentum=0.03))


def shapes(module, prefix=''):
    return {
        prefix + k: (tuple(v.shape), str(v.dtype).replace('torch.', ''))
        for k, v in module.state_dict().items()
    }


@pytest.mark.parametrize('cfg,model,num_keys', [
    (SSD300_NECK, 'ssd300_vgg16', 17),
    (SSD512_NECK, 'ssd512_vgg16', 21),
    (SSDLITE_NECK, 'ssdlite_mobilenetv2', 4 * (6 + 6 + 6)),
])
def test_state_dict_matches_mmdet_checkpoints(cfg, model, num_keys):
    with torch.device('meta'):
        neck = MODELS.build(cfg)
    expected = {
        k: v
        for k, v in read_compat(model).items() if k.startswith('neck.')
    }
    assert len(expected) == num_keys
    assert shapes(neck, 'neck.') == expected


@pytest.mark.parametrize('backbone,neck,size,levels', [
    (SSD_VGG, SSD300_NECK, 300, (38, 19, 10, 5, 3, 1)),
    (SSD_VGG, SSD512_NECK, 512, (64, 32, 16, 8, 4, 2, 1)),
    (SSDLITE_BACKBONE, SSDLITE_NECK, 320, (20, 10, 5, 3, 2, 1)),
])
def test_detector_levels(backbone, neck, size, levels):
    with torch.device('meta'):
        outs = MODELS.build(neck).eval()(
            MODELS.build(backbone).eval()(torch.empty(1, 3, size, size)))
    assert len(levels) == len(neck['out_channels'])
    assert [tuple(o.shape) for o in outs] == [
        (1, c, s, s) for c, s in zip(neck['out_channels'], levels)
    ]


def test_real_forward_ssd300_extra_levels():
    neck = MODELS.build(SSD300_NECK)
    neck.init_weights()
    feats = (torch.randn(1, 512, 38, 38), torch.randn(1, 1024, 19, 19))
    outs = neck(feats)
    # floor((n + 2p - k) / s) + 1: 19 -> 10 -> 5 -> 3 -> 1
    assert [o.shape[-1] for o in outs] == [38, 19, 10, 5, 3, 1]
    assert outs[1] is feats[1]  # fc7 passes through untouched
    norms = outs[0].pow(2).sum(1).sqrt()
    torch.testing.assert_close(norms, torch.full_like(norms, 20.))


def test_l2norm_formula_by_hand():
    l2 = L2Norm(3, scale=20.)
    assert torch.all(l2.weight == 20.) and l2.eps == 1e-10
    with torch.no_grad():
        l2.weight.copy_(torch.tensor([1., 2., 3.]))
    x = torch.zeros(1, 3, 1, 2)
    x[0, :, 0, 0] = torch.tensor([3., 4., 0.])  # norm 5
    x[0, :, 0, 1] = torch.tensor([1., 2., 2.])  # norm 3
    expected = torch.zeros(1, 3, 1, 2)
    expected[0, :, 0, 0] = torch.tensor([1 * 3 / 5, 2 * 4 / 5, 0.])
    expected[0, :, 0, 1] = torch.tensor([1 / 3, 2 * 2 / 3, 3 * 2 / 3])
    torch.testing.assert_close(l2(x), expected)
    # an all-zero pixel stays 0 thanks to eps (no NaN)
    assert torch.equal(l2(torch.zeros(1, 3, 2, 2)), torch.zeros(1, 3, 2, 2))


def test_l2norm_computes_in_float32_for_half_inputs():
    l2 = L2Norm(2, scale=1.)
    # 300^2 + 400^2 overflows float16 (max 65504); float32 gives norm 500
    x = torch.tensor([300., 400.]).view(1, 2, 1, 1).half()
    y = l2(x)
    assert y.dtype == torch.float16
    torch.testing.assert_close(y.float().flatten(), torch.tensor([0.6, 0.8]),
                               atol=1e-3, rtol=0)


def test_init_keeps_l2norm_scale_and_xavier_convs():
    neck = MODELS.build(dict(SSD300_NECK, l2_norm_scale=10.))
    with torch.no_grad():
        neck.l2_norm.weight.fill_(3.)
    neck.init_weights()
    assert torch.all(neck.l2_norm.weight == 10.)
    conv = neck.extra_layers[0][0].conv  # 256 x 1024 x 1 x 1
    bound = (6 / (1024 + 256))**0.5
    assert bound * 0.99 < conv.weight.abs().max() <= bound
    assert torch.count_nonzero(conv.bias) == 0


def test_ssdlite_depthwise_layout():
    neck = MODELS.build(SSDLITE_NECK)
    assert not hasattr(neck, 'l2_norm')
    second = neck.extra_layers[0][1]
    assert isinstance(second, DepthwiseSeparableConvModule)
    assert second.depthwise_conv.conv.groups == 256
    assert second.depthwise_conv.conv.stride == (2, 2)
    assert second.pointwise_conv.conv.kernel_size == (1, 1)
    assert (second.pointwise_conv.bn.eps,
            second.pointwise_conv.bn.momentum) == (1e-3, 0.03)
    assert isinstance(second.depthwise_conv.activate, nn.ReLU6)
    assert isinstance(neck.extra_layers[3][0].activate, nn.ReLU6)
    outs = neck.eval()((torch.randn(1, 96, 20, 20),
                        torch.randn(1, 1280, 10, 10)))
    assert [tuple(o.shape[1:]) for o in outs] == [(96, 20, 20),
                                                 (1280, 10, 10),
                                                 (512, 5, 5), (256, 3, 3),
                                                 (256, 2, 2), (128, 1, 1)]


def test_errors():
    with pytest.raises(ValueError, match='must start with'):
        SSDNeck((512, 1024), (512, 512, 256), (2, ), (1, ))
    with pytest.raises(ValueError, match='one entry per extra level'):
        SSDNeck((512, 1024), (512, 1024, 256), (2, 2), (1, ))
