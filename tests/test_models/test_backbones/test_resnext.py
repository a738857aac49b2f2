"""ResNeXt: group widths in closed form, mmdetection's checkpoint names,
ResNet equivalence at groups=1, and the ``open-mmlab://`` weight names."""
import math

import pytest
import torch
from conftest import read_compat
from mmengine.runner.checkpoint import get_external_models

from detkit.models.backbones import ResNet, ResNeXt
from detkit.models.backbones.resnext import Bottleneck, resnext_width
from detkit.registry import MODELS


def shapes(module, prefix=''):
    return {
        prefix + k: (tuple(v.shape), str(v.dtype).replace('torch.', ''))
        for k, v in module.state_dict().items()
    }


# (config whose key list is compared, groups, base_width, norm requires_grad)
X101 = [
    ('retinanet/retinanet_x101-64x4d_fpn_1x_coco', 64, 4, True),
    ('faster_rcnn/faster-rcnn_x101-32x4d_fpn_1x_coco', 32, 4, True),
    ('faster_rcnn/faster-rcnn_x101-32x8d_fpn_ms-3x_coco', 32, 8, False),
]


@pytest.mark.parametrize('config,groups,base_width,grad', X101)
def test_x101_state_dict_equals_mmdet_key_lists(config, groups, base_width,
                                                grad):
    cfg = dict(type='ResNeXt', depth=101, groups=groups,
               base_width=base_width, num_stages=4, out_indices=(0, 1, 2, 3),
               frozen_stages=1, norm_cfg=dict(type='BN', requires_grad=grad),
               style='pytorch')
    with torch.device('meta'):
        backbone = MODELS.build(cfg)
    expected = {k: v for k, v in read_compat(f'configs/{config}').items()
                if k.startswith('backbone.')}
    # stem 6 + downsample 4 x 6 + (3 + 4 + 23 + 3) blocks x 18
    assert len(expected) == 6 + 24 + 33 * 18 == 624
    assert shapes(backbone, 'backbone.') == expected


@pytest.mark.parametrize('groups,base_width,widths', [
    (32, 4, [128, 256, 512, 1024]),
    (64, 4, [256, 512, 1024, 2048]),
    (32, 8, [256, 512, 1024, 2048]),
    (1, 4, [64, 128, 256, 512]),  # groups=1: ResNet's planes
])
def test_group_width_rule(groups, base_width, widths):
    # width = floor(planes * base_width / 64) * groups, planes = 64 * 2**i
    assert [resnext_width(64 * 2**i, groups, base_width)
            for i in range(4)] == widths
    with torch.device('meta'):
        model = ResNeXt(50, groups=groups, base_width=base_width)
    for i, width in enumerate(widths):
        block = getattr(model, f'layer{i + 1}')[0]
        assert block.conv1.out_channels == width
        assert block.conv2.groups == groups
        # each group sees width / groups input channels
        assert block.conv2.weight.shape == (width, width // groups, 3, 3)
        assert block.conv3.out_channels == 256 * 2**i  # planes * 4


def test_floor_of_a_fractional_group_width():
    # In a ResNeXt, planes * base_width / base_channels = base_width * 2**i
    # is whole; a block built on its own can hit the floor: 64 * 3 / 40 =
    # 4.8 -> 4 channels per group.
    block = Bottleneck(64, 64, groups=8, base_width=3, base_channels=40)
    assert resnext_width(64, 8, 3, 40) == 32
    assert block.conv2.weight.shape == (32, 4, 3, 3)
    assert block.conv3.weight.shape == (256, 32, 1, 1)
    # base_channels also scales a whole model: planes 40, 80, 160, 320
    model = ResNeXt(50, groups=8, base_width=3, base_channels=40)
    assert [getattr(model, f'layer{i}')[0].conv2.out_channels
            for i in range(1, 5)] == [24, 48, 96, 192]
    outs = model.eval()(torch.randn(1, 3, 64, 64))
    assert [tuple(o.shape[1:]) for o in outs] == [
        (160, 16, 16), (320, 8, 8), (640, 4, 4), (1280, 2, 2)]


def test_groups_1_is_resnet_exactly():
    resnext = ResNeXt(50, groups=1, base_width=4, base_channels=16)
    resnet = ResNet(50, base_channels=16)
    assert shapes(resnext) == shapes(resnet)
    resnext.load_state_dict(resnet.state_dict())
    x = torch.randn(1, 3, 64, 64)
    for a, b in zip(resnext.eval()(x), resnet.eval()(x)):
        assert torch.equal(a, b)


def test_grouped_conv_keeps_groups_apart():
    """Changing the input of group 0 of a block's 3x3 conv leaves the other
    groups' outputs unchanged (the conv is really split)."""
    model = ResNeXt(50, groups=4, base_width=4, base_channels=16).eval()
    conv2 = model.layer1[0].conv2  # width floor(16 * 4 / 16) * 4 = 16
    assert (conv2.in_channels, conv2.groups) == (16, 4)
    x = torch.randn(1, 16, 8, 8)
    y = x.clone()
    y[:, :4] += 1.0  # group 0 = input channels 0..3
    out_x, out_y = conv2(x), conv2(y)
    assert torch.equal(out_x[:, 4:], out_y[:, 4:])
    assert not torch.allclose(out_x[:, :4], out_y[:, :4])


def test_resnet_arguments_pass_through():
    model = ResNeXt(101, groups=32, base_width=4, num_stages=4,
                    strides=(1, 2, 2, 1), dilations=(1, 1, 1, 2),
                    out_indices=(3, ), frozen_stages=2, style='caffe',
                    norm_cfg=dict(type='SyncBN', requires_grad=False))
    # caffe style: the stride sits on the first 1x1 conv
    assert model.layer2[0].conv1.stride == (2, 2)
    assert model.layer2[0].conv2.stride == (1, 1)
    assert model.layer4[0].conv2.dilation == (2, 2)
    assert isinstance(model.layer3[0].bn2, torch.nn.SyncBatchNorm)
    assert not any(p.requires_grad for n, p in model.named_parameters()
                   if 'bn' in n)
    model.train()
    assert not model.layer2.training and model.layer3.training
    assert not any(p.requires_grad for p in model.layer2.parameters())
    assert all(p.requires_grad for n, p in model.layer3.named_parameters()
               if 'conv' in n)


def test_errors_name_the_problem():
    with pytest.raises(KeyError, match='ResNeXt: invalid depth 18'):
        ResNeXt(18, groups=32)
    with pytest.raises(ValueError, match='groups must be a positive int'):
        ResNeXt(50, groups=0)
    with pytest.raises(TypeError, match="'base_widht'"):
        MODELS.build(dict(type='ResNeXt', depth=50, base_widht=4))


@pytest.mark.parametrize('name,file_name', [
    ('resnext101_32x4d', 'resnext101_32x4d-a5af3160.pth'),
    ('resnext101_64x4d', 'resnext101_64x4d-ee2c6f71.pth'),
    ('detectron2/resnext101_32x8d', 'resnext101_32x8d-1516f1aa.pth'),
])
def test_openmmlab_names_read_the_hub_cache(tmp_path, monkeypatch, name,
                                            file_name):
    """``open-mmlab://<name>`` -> mmengine's OpenMMLab URL table -> the
    torch hub cache file ``$TORCH_HOME/hub/checkpoints/<URL basename>``
    (the path every ``torchvision://`` and ``open-mmlab://`` name takes);
    a file already there loads without a download."""
    assert get_external_models()[name].rsplit('/', 1)[-1] == file_name
    monkeypatch.setenv('TORCH_HOME', str(tmp_path))
    monkeypatch.setattr(torch.hub, '_hub_dir', None)
    cache = tmp_path / 'hub' / 'checkpoints'
    cache.mkdir(parents=True)
    small = dict(depth=50, groups=4, base_width=4, base_channels=16)
    expected = {
        k: torch.arange(v.numel(), dtype=torch.float32).reshape(v.shape) *
        1e-3 + i if v.is_floating_point() else torch.full_like(v, i)
        for i, (k, v) in enumerate(ResNeXt(**small).state_dict().items())
    }
    # an ImageNet file also holds the classifier, which is ignored
    torch.save(dict(expected, **{'fc.weight': torch.zeros(1000, 2048)}),
               cache / file_name)
    model = MODELS.build(dict(
        type='ResNeXt', **small,
        init_cfg=dict(type='Pretrained', checkpoint=f'open-mmlab://{name}')))
    model.init_weights()
    loaded = model.state_dict()
    assert set(loaded) == set(expected)
    assert all(torch.equal(loaded[k], v) for k, v in expected.items())


def test_output_sizes_are_the_ceil_of_the_strides():
    model = ResNeXt(50, groups=32, base_width=4).eval()
    outs = model(torch.randn(1, 3, 70, 45))
    assert [tuple(o.shape) for o in outs] == [
        (1, 256 * 2**i, math.ceil(70 / s), math.ceil(45 / s))
        for i, s in enumerate((4, 8, 16, 32))
    ]
