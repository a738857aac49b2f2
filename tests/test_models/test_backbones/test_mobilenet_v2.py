"""MobileNetV2: SSDLite checkpoint names, strides, widths, freezing, init."""
import math

import pytest
import torch
import torch.nn as nn
from conftest import read_compat

from detkit.models.backbones import MobileNetV2
from detkit.models.backbones.mobilenet_v2 import make_divisible
from detkit.registry import MODELS

# The backbone of ssd/ssdlite_mobilenetv2-scratch_8xb24-600e_coco.py.
SSDLITE_CFG = dict(
    type='MobileNetV2',
    out_indices=(4, 7),
    norm_cfg=dict(type='BN', eps=0.001, momentum=0.03),
    act_cfg=dict(type='ReLU6'),
    init_cfg=dict(type='TruncNormal', layer='Conv2d', std=0.03))


def shapes(module, prefix=''):
    return {
        prefix + k: (tuple(v.shape), str(v.dtype).replace('torch.', ''))
        for k, v in module.state_dict().items()
    }


def test_state_dict_matches_ssdlite_checkpoint():
    with torch.device('meta'):
        backbone = MODELS.build(SSDLITE_CFG)
    expected = {
        k: v
        for k, v in read_compat('ssdlite_mobilenetv2').items()
        if k.startswith('backbone.')
    }
    # conv1 + conv2 (6 each), layer1 (2 convs), 16 blocks of 3 convs
    assert len(expected) == 6 * (2 + 2 + 16 * 3)
    assert shapes(backbone, 'backbone.') == expected
    bn = backbone.layer3[0].depthwise_conv.bn
    assert (bn.eps, bn.momentum) == (1e-3, 0.03)
    assert isinstance(backbone.conv1.activate, nn.ReLU6)


def test_ssdlite_outputs_at_320():
    model = MODELS.build(SSDLITE_CFG).eval()
    outs = model(torch.randn(1, 3, 320, 320))
    assert [tuple(o.shape) for o in outs] == [(1, 96, 20, 20),
                                              (1, 1280, 10, 10)]


def test_default_out_indices_strides_and_channels():
    model = MobileNetV2().eval()
    outs = model(torch.randn(2, 3, 65, 63))
    # layer2 / layer3 / layer5 / conv2 at strides 4 / 8 / 16 / 32
    assert [tuple(o.shape) for o in outs] == [
        (2, c, math.ceil(65 / s), math.ceil(63 / s))
        for c, s in [(24, 4), (32, 8), (96, 16), (1280, 32)]
    ]


def test_blocks_shortcut_and_expansion():
    model = MobileNetV2()
    assert [len(getattr(model, f'layer{i}')) for i in range(1, 8)] == [
        1, 2, 3, 4, 3, 3, 1
    ]
    assert not hasattr(model.layer1[0], 'expand_conv')  # expand ratio 1
    assert model.layer2[0].expand_conv.conv.out_channels == 16 * 6
    assert not model.layer2[0].with_res_shortcut  # stride 2
    assert model.layer2[1].with_res_shortcut
    assert not model.layer5[0].with_res_shortcut  # 64 -> 96 channels
    assert model.layer5[0].depthwise_conv.conv.groups == 64 * 6
    assert not model.layer5[0].linear_conv.with_activation
    # the shortcut is a real sum: zero the branch and the block is identity
    block = model.layer2[1].eval()
    nn.init.zeros_(block.linear_conv.bn.weight)
    nn.init.zeros_(block.linear_conv.bn.bias)
    x = torch.randn(1, 24, 8, 8)
    torch.testing.assert_close(block(x), x)


def test_make_divisible_and_widen_factor():
    assert make_divisible(12, 8) == 16
    assert make_divisible(20, 8) == 24
    assert make_divisible(10, 8) == 16  # 8 would lose > 10 %
    assert make_divisible(3, 8) == 8  # at least the divisor
    half = MobileNetV2(widen_factor=0.5)
    assert half.conv1.conv.out_channels == 16
    assert half.layer1[0].linear_conv.conv.out_channels == 8
    assert half.layer2[0].linear_conv.conv.out_channels == 16
    assert half.conv2.conv.out_channels == 1280
    wide = MobileNetV2(widen_factor=1.5)
    assert wide.conv1.conv.out_channels == 48
    assert wide.conv2.conv.out_channels == 1920


def test_frozen_stages_and_norm_eval():
    model = MobileNetV2(frozen_stages=2).train()
    frozen = {n.split('.')[0] for n, p in model.named_parameters()
              if not p.requires_grad}
    assert frozen == {'conv1', 'layer1', 'layer2'}
    assert all(p.requires_grad for p in model.layer3.parameters())
    assert not any(m.training for m in model.layer2.modules())
    assert model.layer3.training

    model = MobileNetV2(norm_eval=True).train()
    before = model.layer4[0].expand_conv.bn.running_mean.clone()
    model(torch.randn(2, 3, 32, 32))
    assert torch.equal(model.layer4[0].expand_conv.bn.running_mean, before)
    model = MobileNetV2(norm_eval=False).train()
    model(torch.randn(2, 3, 32, 32))
    assert not torch.equal(model.layer4[0].expand_conv.bn.running_mean,
                           before)


def test_with_cp_same_output_and_grad():
    plain, ckpt = MobileNetV2(), MobileNetV2(with_cp=True)
    ckpt.load_state_dict(plain.state_dict())
    results = []
    for model in (plain, ckpt):
        model.eval()
        x = torch.ones(1, 3, 32, 32, requires_grad=True)
        out = sum(o.sum() for o in model(x))
        out.backward()
        results.append((out.detach(), x.grad))
    torch.testing.assert_close(results[0], results[1])


def test_ssdlite_init_truncnormal_then_kaiming_on_conv1_conv2():
    """TruncNormal(std 0.03) on every conv, then, as in mmdetection, the
    direct ConvModule children conv1/conv2 re-initialised Kaiming fan_out."""
    model = MODELS.build(SSDLITE_CFG)
    model.init_weights()
    w = model.layer6[0].expand_conv.conv.weight  # 576 x 96 = 55296 values
    assert abs(w.std().item() - 0.03) < 0.03 * 0.02
    conv2 = model.conv2.conv.weight  # fan_out 1280
    assert abs(conv2.std().item() - math.sqrt(2 / 1280)) < 0.02 * 0.0395
    conv1 = model.conv1.conv.weight  # fan_out 32 * 9
    assert abs(conv1.std().item() - math.sqrt(2 / 288)) < 0.1 * 0.083
    assert torch.all(model.conv2.bn.weight == 1)


def test_errors():
    with pytest.raises(ValueError, match='out_indices'):
        MobileNetV2(out_indices=(8, ))
    with pytest.raises(ValueError, match='frozen_stages'):
        MobileNetV2(frozen_stages=8)
