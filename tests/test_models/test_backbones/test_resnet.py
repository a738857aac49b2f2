"""ResNet: checkpoint names, output sizes, styles, freezing, init, weights."""
import math

import pytest
import torch
import torch.nn as nn
import torchvision
from conftest import read_compat
from mmengine.runner.checkpoint import get_torchvision_models

from detkit.models.backbones import ResNet
from detkit.models.backbones.resnet import BasicBlock, Bottleneck
from detkit.registry import MODELS

# The backbone of retinanet/retinanet_r50_fpn_1x_coco.py (also RPN and
# Faster R-CNN r50-fpn).
R50_CFG = dict(
    type='ResNet',
    depth=50,
    num_stages=4,
    out_indices=(0, 1, 2, 3),
    frozen_stages=1,
    norm_cfg=dict(type='BN', requires_grad=True),
    norm_eval=True,
    style='pytorch',
    init_cfg=dict(type='Pretrained', checkpoint='torchvision://resnet50'))


def shapes(module, prefix=''):
    return {
        prefix + k: (tuple(v.shape), str(v.dtype).replace('torch.', ''))
        for k, v in module.state_dict().items()
    }


def compat_part(name, prefix):
    return {k: v for k, v in read_compat(name).items() if k.startswith(prefix)}


@pytest.mark.parametrize('model', ['retinanet_r50_fpn', 'rpn_r50_fpn',
                                   'faster_rcnn_r50_fpn'])
def test_r50_state_dict_matches_mmdet_checkpoints(model):
    with torch.device('meta'):  # names and shapes only: skip the init
        backbone = MODELS.build(R50_CFG)
    expected = compat_part(model, 'backbone.')
    assert len(expected) == 318
    assert shapes(backbone, 'backbone.') == expected


def test_r50_keys_equal_torchvision_keys():
    """torchvision://resnet50 loads onto the backbone: same names and shapes
    (torchvision's classifier ``fc`` aside)."""
    with torch.device('meta'):
        ours = shapes(ResNet(50))
        theirs = shapes(torchvision.models.resnet50(weights=None))
    assert {k for k in theirs if k not in ours} == {'fc.weight', 'fc.bias'}
    assert ours == {k: v for k, v in theirs.items() if not k.startswith('fc.')}


@pytest.mark.parametrize('depth,channels,blocks', [
    (18, (64, 128, 256, 512), (2, 2, 2, 2)),
    (34, (64, 128, 256, 512), (3, 4, 6, 3)),
    (50, (256, 512, 1024, 2048), (3, 4, 6, 3)),
    (101, (256, 512, 1024, 2048), (3, 4, 23, 3)),
    (152, (256, 512, 1024, 2048), (3, 8, 36, 3)),
])
def test_output_shapes_are_ceil_of_strides(depth, channels, blocks):
    with torch.device('meta'):
        model = ResNet(depth).eval()
        outs = model(torch.empty(2, 3, 333, 250))
    # stride-2 convs with "same" padding give ceil(n / 2) each time
    assert [tuple(o.shape) for o in outs] == [
        (2, c, math.ceil(333 / s), math.ceil(250 / s))
        for c, s in zip(channels, (4, 8, 16, 32))
    ]
    assert [len(getattr(model, f'layer{i}')) for i in range(1, 5)] == list(
        blocks)
    assert model.feat_dim == channels[-1]


def test_real_forward_and_out_indices():
    model = ResNet(18, out_indices=(1, 3)).eval()
    outs = model(torch.randn(1, 3, 64, 64))
    assert [tuple(o.shape) for o in outs] == [(1, 128, 8, 8), (1, 512, 2, 2)]
    assert all(torch.isfinite(o).all() for o in outs)


def test_pytorch_and_caffe_style_put_the_stride_on_different_convs():
    pt = ResNet(50, style='pytorch')
    caffe = ResNet(50, style='caffe')
    assert pt.layer2[0].conv1.stride == (1, 1)
    assert pt.layer2[0].conv2.stride == (2, 2)
    assert caffe.layer2[0].conv1.stride == (2, 2)
    assert caffe.layer2[0].conv2.stride == (1, 1)
    assert shapes(pt) == shapes(caffe)
    assert caffe.eval()(torch.randn(1, 3, 64, 64))[3].shape == (1, 2048, 2, 2)


def test_deep_stem_and_avg_down_layout():
    model = ResNet(18, deep_stem=True, avg_down=True, stem_channels=64)
    sd = shapes(model)
    assert sd['stem.0.weight'] == ((32, 3, 3, 3), 'float32')
    assert sd['stem.3.weight'] == ((32, 32, 3, 3), 'float32')
    assert sd['stem.6.weight'] == ((64, 32, 3, 3), 'float32')
    assert 'conv1.weight' not in sd
    # ResNet-D shortcut: AvgPool 2x2 then a stride-1 1x1 conv
    down = model.layer2[0].downsample
    assert isinstance(down[0], nn.AvgPool2d) and down[0].kernel_size == 2
    assert down[1].stride == (1, 1)
    assert sd['layer2.0.downsample.1.weight'] == ((128, 64, 1, 1), 'float32')
    outs = model.eval()(torch.randn(1, 3, 64, 64))
    assert [o.shape[-1] for o in outs] == [16, 8, 4, 2]


def test_dilation_keeps_resolution():
    model = ResNet(18, strides=(1, 2, 2, 1), dilations=(1, 1, 1, 2)).eval()
    assert model.layer4[0].conv1.dilation == (2, 2)
    assert model.layer4[0].conv1.padding == (2, 2)
    assert model(torch.randn(1, 3, 64, 64))[3].shape == (1, 512, 4, 4)


def test_group_norm_and_syncbn_names():
    gn = ResNet(18, norm_cfg=dict(type='GN', num_groups=32))
    assert isinstance(gn.gn1, nn.GroupNorm) and gn.norm1 is gn.gn1
    assert isinstance(gn.layer1[0].gn2, nn.GroupNorm)
    assert isinstance(gn.layer2[0].downsample[1], nn.GroupNorm)
    assert 'layer1.0.gn1.weight' in gn.state_dict()
    sync = ResNet(18, norm_cfg=dict(type='SyncBN'), norm_eval=True)
    assert isinstance(sync.bn1, nn.SyncBatchNorm)
    sync.train()
    assert not any(m.training for m in sync.modules()
                   if isinstance(m, nn.SyncBatchNorm))


def test_frozen_stages_stay_frozen_through_train():
    model = ResNet(18, frozen_stages=1, norm_eval=False)
    model.train()
    frozen = {n for n, p in model.named_parameters() if not p.requires_grad}
    expected = {
        n
        for n, _ in model.named_parameters()
        if n.split('.')[0] in ('conv1', 'bn1', 'layer1')
    }
    # stem conv + bn (3 tensors) and 2 BasicBlocks of 6 tensors each
    assert len(expected) == 3 + 2 * 6
    assert frozen == expected
    assert not model.bn1.training
    assert not any(m.training for m in model.layer1.modules())
    assert all(m.training for m in model.layer2.modules())
    # frozen running statistics do not move
    before = model.layer1[0].bn1.running_mean.clone()
    model(torch.randn(2, 3, 32, 32))
    assert torch.equal(model.layer1[0].bn1.running_mean, before)


def test_norm_eval_freezes_running_stats_in_train_mode():
    model = ResNet(18, norm_eval=True).train()
    assert model.training
    stats = {k: v.clone() for k, v in model.state_dict().items()
             if 'running' in k}
    model(torch.randn(2, 3, 32, 32))
    assert all(torch.equal(model.state_dict()[k], v)
               for k, v in stats.items())
    # without norm_eval the same forward moves them
    model = ResNet(18, norm_eval=False).train()
    model(torch.randn(2, 3, 32, 32))
    assert not torch.equal(model.layer4[1].bn2.running_mean,
                           torch.zeros(512))


def test_with_cp_gives_the_same_output_and_gradients(monkeypatch):
    from detkit.models.backbones import resnet
    calls = []

    def counting_checkpoint(fn, *args, **kwargs):
        calls.append(fn)
        return torch.utils.checkpoint.checkpoint(fn, *args, **kwargs)

    monkeypatch.setattr(resnet, 'checkpoint', counting_checkpoint)
    plain = ResNet(18)
    ckpt = ResNet(18, with_cp=True)
    ckpt.load_state_dict(plain.state_dict())
    grads = []
    for model in (plain, ckpt):
        model.train()
        x = torch.randn(1, 3, 32, 32,
                        generator=torch.Generator().manual_seed(1),
                        requires_grad=True)
        out = sum(o.sum() for o in model(x))
        out.backward()
        grads.append((out.detach(), x.grad, model.conv1.weight.grad))
    assert len(calls) == 8  # one per BasicBlock, only when with_cp
    for a, b in zip(*grads):
        torch.testing.assert_close(a, b)


def test_default_init_kaiming_and_zero_init_residual():
    model = ResNet(50)
    model.init_weights()
    # Kaiming normal, fan_out: std = sqrt(2 / (64 * 7 * 7))
    std = model.conv1.weight.std().item()
    assert abs(std - math.sqrt(2 / (64 * 49))) < 0.05 * std
    for block in model.modules():
        if isinstance(block, Bottleneck):
            assert torch.count_nonzero(block.bn3.weight) == 0
            assert torch.all(block.bn1.weight == 1)
            assert torch.all(block.bn2.weight == 1)
    assert torch.all(model.layer1[0].downsample[1].weight == 1)
    # a zero-initialised block without projection is the identity (after
    # the ReLU that feeds it, inputs are >= 0)
    model.eval()
    x = torch.relu(torch.randn(1, 256, 8, 8))
    torch.testing.assert_close(model.layer1[1](x), x)

    keep = ResNet(18, zero_init_residual=False)
    keep.init_weights()
    assert all(torch.all(b.bn2.weight == 1) for b in keep.modules()
               if isinstance(b, BasicBlock))


def _known_state_dict(reference):
    """A state dict like ``reference`` whose every tensor has distinct,
    known values."""
    out = {}
    for i, (k, v) in enumerate(reference.state_dict().items()):
        if v.dtype.is_floating_point:
            out[k] = (torch.arange(v.numel(), dtype=torch.float64) * 1e-4 +
                      i).reshape(v.shape).to(v.dtype)
        else:
            out[k] = torch.full_like(v, i)
    return out


def _assert_loaded(model, expected):
    sd = model.state_dict()
    missing = [k for k in expected if not k.startswith('fc.') and
               not torch.equal(sd[k], expected[k])]
    assert missing == []
    assert set(sd) == {k for k in expected if not k.startswith('fc.')}


def test_pretrained_torchvision_scheme_reads_the_hub_cache(
        tmp_path, monkeypatch):
    """``torchvision://resnet18`` -> mmengine's URL table -> torch hub cache
    ``$TORCH_HOME/hub/checkpoints/<basename of the URL>``; a file already
    there is used without any download."""
    url = get_torchvision_models()['resnet18']
    file_name = url.rsplit('/', 1)[-1]
    assert file_name == 'resnet18-f37072fd.pth'
    monkeypatch.setenv('TORCH_HOME', str(tmp_path))
    monkeypatch.setattr(torch.hub, '_hub_dir', None)
    cache = tmp_path / 'hub' / 'checkpoints'
    cache.mkdir(parents=True)
    expected = _known_state_dict(torchvision.models.resnet18(weights=None))
    torch.save(expected, cache / file_name)

    model = MODELS.build(
        dict(type='ResNet', depth=18,
             init_cfg=dict(type='Pretrained',
                           checkpoint='torchvision://resnet18')))
    model.init_weights()
    _assert_loaded(model, expected)
    # pretrained weights are not zeroed by zero_init_residual
    assert torch.count_nonzero(model.layer1[0].bn2.weight) > 0


def test_pretrained_local_path_and_deprecated_argument(tmp_path):
    expected = _known_state_dict(ResNet(18))
    path = tmp_path / 'r18.pth'
    # mmdetection-style checkpoint: weights under 'state_dict'
    torch.save({'state_dict': expected, 'meta': {}}, path)
    model = ResNet(18, init_cfg=dict(type='Pretrained', checkpoint=str(path)))
    model.init_weights()
    _assert_loaded(model, expected)

    with pytest.warns(UserWarning, match='deprecated'):
        old = ResNet(18, pretrained=str(path))
    old.init_weights()
    _assert_loaded(old, expected)


def test_errors_name_the_problem():
    with pytest.raises(KeyError, match='invalid depth 42'):
        ResNet(42)
    with pytest.raises(ValueError, match='out_indices'):
        ResNet(18, out_indices=(4, ))
    with pytest.raises(ValueError, match='not both'):
        ResNet(18, pretrained='a.pth', init_cfg=dict(type='Kaiming'))
    with pytest.raises(NotImplementedError, match='dcn'):
        ResNet(50, dcn=dict(type='DCNv2'))
    with pytest.raises(TypeError, match='frozen_stages'):
        MODELS.build(dict(type='ResNet', depth=18, frozen_stage=1))


@pytest.mark.parametrize('checkpoint,file_name,style', [
    # faster-rcnn_r50-tnr-pre_fpn_1x_coco.py: torchvision's V2 weights by URL
    ('https://download.pytorch.org/models/resnet50-11ad3fa6.pth',
     'resnet50-11ad3fa6.pth', 'pytorch'),
    # the *-caffe_* and *-caffe-dc5 / -c4 configs
    ('open-mmlab://detectron2/resnet50_caffe', 'resnet50_msra-5891d200.pth',
     'caffe'),
])
def test_pretrained_url_and_detectron2_names_read_the_hub_cache(
        tmp_path, monkeypatch, checkpoint, file_name, style):
    """A URL and an ``open-mmlab://`` name take the same route as
    ``torchvision://``: the file ``$TORCH_HOME/hub/checkpoints/<URL
    basename>``, used without a download when it is there."""
    monkeypatch.setenv('TORCH_HOME', str(tmp_path))
    monkeypatch.setattr(torch.hub, '_hub_dir', None)
    cache = tmp_path / 'hub' / 'checkpoints'
    cache.mkdir(parents=True)
    expected = _known_state_dict(torchvision.models.resnet50(weights=None))
    torch.save(expected, cache / file_name)
    model = MODELS.build(
        dict(type='ResNet', depth=50, style=style,
             norm_cfg=dict(type='BN', requires_grad=style == 'pytorch'),
             init_cfg=dict(type='Pretrained', checkpoint=checkpoint)))
    model.init_weights()
    _assert_loaded(model, expected)


def test_tnr_optimizer_settings_build_on_the_backbone():
    """The tnr config trains with AdamW and ``paramwise_cfg=dict(
    norm_decay_mult=0., bypass_duplicate=True)`` (mmengine's constructor):
    norm weights and biases get no weight decay, convs keep 0.1."""
    from mmengine.optim import build_optim_wrapper
    model = ResNet(18)
    wrapper = build_optim_wrapper(model, dict(
        optimizer=dict(type='AdamW', lr=0.0001, weight_decay=0.1),
        paramwise_cfg=dict(norm_decay_mult=0., bypass_duplicate=True)))
    decay = {id(g['params'][0]): g['weight_decay']
             for g in wrapper.optimizer.param_groups}
    assert decay[id(model.conv1.weight)] == 0.1
    assert decay[id(model.bn1.weight)] == 0.0
    assert decay[id(model.layer4[1].bn2.bias)] == 0.0
    assert len(decay) == len(list(model.parameters()))
