"""SSDVGG: mmdetection's ``features`` indices, output sizes, init."""
import math

import pytest
import torch
import torch.nn as nn
from conftest import read_compat

from detkit.models.backbones import SSDVGG
from detkit.registry import MODELS

# The backbone of ssd/ssd300_coco.py (and ssd512_coco.py).
SSD_VGG_CFG = dict(
    type='SSDVGG',
    depth=16,
    with_last_pool=False,
    ceil_mode=True,
    out_indices=(3, 4),
    out_feature_indices=(22, 34),
    init_cfg=dict(type='Pretrained', checkpoint='open-mmlab://vgg16_caffe'))


def shapes(module, prefix=''):
    return {
        prefix + k: (tuple(v.shape), str(v.dtype).replace('torch.', ''))
        for k, v in module.state_dict().items()
    }


@pytest.mark.parametrize('model', ['ssd300_vgg16', 'ssd512_vgg16'])
def test_state_dict_matches_mmdet_checkpoints(model):
    with torch.device('meta'):
        backbone = MODELS.build(SSD_VGG_CFG)
    expected = {
        k: v
        for k, v in read_compat(model).items() if k.startswith('backbone.')
    }
    assert len(expected) == 30  # 15 convs, weight + bias
    assert shapes(backbone, 'backbone.') == expected


def test_features_layout():
    with torch.device('meta'):
        f = SSDVGG().features
    assert len(f) == 35
    pools = [i for i, m in enumerate(f) if isinstance(m, nn.MaxPool2d)]
    assert pools == [4, 9, 16, 23, 30]
    assert all(f[i].ceil_mode and f[i].kernel_size == 2 and f[i].stride == 2
               for i in pools[:4])
    assert (f[30].kernel_size, f[30].stride, f[30].padding) == (3, 1, 1)
    assert (f[31].in_channels, f[31].out_channels) == (512, 1024)
    assert (f[31].kernel_size, f[31].padding, f[31].dilation) == ((3, 3),
                                                                  (6, 6),
                                                                  (6, 6))
    assert (f[33].kernel_size, f[33].out_channels) == ((1, 1), 1024)
    assert isinstance(f[22], nn.ReLU) and isinstance(f[34], nn.ReLU)
    with torch.device('meta'):
        assert isinstance(SSDVGG(with_last_pool=True).features[30],
                          nn.MaxPool2d)
        assert len(SSDVGG(with_last_pool=True).features) == 36


@pytest.mark.parametrize('size', [300, 512])
def test_conv4_3_and_fc7_sizes(size):
    with torch.device('meta'):
        outs = SSDVGG()(torch.empty(2, 3, size, size))
    # ceil-mode pools: ceil(size / 8) and ceil(size / 16)
    s8, s16 = math.ceil(size / 8), math.ceil(size / 16)
    assert [tuple(o.shape) for o in outs] == [(2, 512, s8, s8),
                                              (2, 1024, s16, s16)]
    assert (s8, s16) == {300: (38, 19), 512: (64, 32)}[size]


def test_real_forward_and_single_output():
    model = SSDVGG()
    model.init_weights()
    outs = model(torch.randn(1, 3, 36, 36))
    # 36 -> 18 -> 9 -> 5 (ceil) -> 3 (ceil)
    assert [tuple(o.shape) for o in outs] == [(1, 512, 5, 5),
                                              (1, 1024, 3, 3)]
    assert all((o >= 0).all() for o in outs)  # taken after ReLUs
    single = SSDVGG(out_feature_indices=(34, ))
    assert single(torch.randn(1, 3, 36, 36)).shape == (1, 1024, 3, 3)


def test_default_init_is_kaiming():
    model = SSDVGG()
    model.init_weights()
    conv = model.features[33]  # 1024x1024x1x1, fan_out = 1024
    assert abs(conv.weight.std().item() - math.sqrt(2 / 1024)) < 2e-3
    assert torch.count_nonzero(conv.bias) == 0


def test_errors():
    with pytest.raises(KeyError, match='invalid depth'):
        SSDVGG(depth=17)
    with pytest.raises(ValueError, match='out_feature_indices'):
        SSDVGG(out_feature_indices=(22, 40))
    with pytest.warns(UserWarning, match='l2_norm_scale'):
        SSDVGG(l2_norm_scale=20)
