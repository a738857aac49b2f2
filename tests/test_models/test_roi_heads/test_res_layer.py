"""ResLayer, the C4 shared head: mmdetection's keys, the same computation
as the backbone's own stage, styles and dilation, norm_eval, frozen norms,
the default init, and loading a backbone checkpoint's ``layer4.*``."""
import math

import pytest
import torch
from conftest import read_compat

from detkit.models.backbones import ResNet
from detkit.models.roi_heads.shared_heads import ResLayer
from detkit.registry import MODELS

FROZEN_BN = dict(type='BN', requires_grad=False)
# model.roi_head.shared_head of faster_rcnn/faster-rcnn_r50-caffe_c4-1x_coco
C4_CFG = dict(type='ResLayer', depth=50, stage=3, stride=2, dilation=1,
              style='caffe', norm_cfg=FROZEN_BN, norm_eval=True)


@pytest.fixture(autouse=True)
def one_thread():
    # small convs on the shared 2-core machine run faster on one thread
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def test_keys_and_shapes_equal_mmdetections_c4_model():
    compat = read_compat(
        'configs/faster_rcnn/faster-rcnn_r50-caffe_c4-1x_coco')
    prefix = 'roi_head.shared_head.'
    expected = {k[len(prefix):]: v for k, v in compat.items()
                if k.startswith(prefix)}
    head = MODELS.build(C4_CFG)
    got = {k: (tuple(v.shape), str(v.dtype).replace('torch.', ''))
           for k, v in head.state_dict().items()}
    assert got == expected
    # three bottlenecks x (3 convs + 3 BNs of 5 entries) + the projection
    assert len(got) == 3 * (3 + 3 * 5) + (1 + 5)


@pytest.mark.parametrize('depth,stage,channels', [
    (50, 3, (1024, 2048)), (50, 2, (512, 1024)), (18, 3, (256, 512))])
def test_the_backbones_stage_exactly(depth, stage, channels):
    """Loaded with a ResNet's ``layer{stage+1}`` weights, the shared head
    computes exactly what that stage computes: (R, C_in, 14, 14) ->
    (R, C_out, 7, 7)."""
    torch.manual_seed(0)
    resnet = ResNet(depth, style='caffe', norm_cfg=FROZEN_BN).eval()
    name = f'layer{stage + 1}'
    head = ResLayer(depth, stage=stage, style='caffe',
                    norm_cfg=FROZEN_BN).eval()
    head.load_state_dict(
        {k: v for k, v in resnet.state_dict().items()
         if k.startswith(name + '.')})
    assert list(dict(head.named_children())) == [name]
    x = torch.randn(2, channels[0], 14, 14)
    out = head(x)
    assert out.shape == (2, channels[1], 7, 7)
    assert torch.equal(out, getattr(resnet, name)(x))
    num_blocks = ResNet.arch_settings[depth][1][stage]
    assert len(getattr(head, name)) == num_blocks


def test_style_and_dilation():
    caffe = ResLayer(50, style='caffe').layer4[0]
    pytorch = ResLayer(50, style='pytorch').layer4[0]
    assert caffe.conv1.stride == (2, 2) and caffe.conv2.stride == (1, 1)
    assert pytorch.conv1.stride == (1, 1) and pytorch.conv2.stride == (2, 2)
    # stride 1, dilation 2: the 14x14 RoI map keeps its size
    dilated = ResLayer(18, stage=3, stride=1, dilation=2).eval()
    assert dilated.layer4[1].conv1.dilation == (2, 2)
    assert dilated(torch.randn(1, 256, 14, 14)).shape == (1, 512, 14, 14)


def test_norm_eval_keeps_batchnorm_statistics_frozen():
    torch.manual_seed(0)
    head = ResLayer(18, stage=1, norm_cfg=FROZEN_BN).train()
    bns = [m for m in head.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    assert bns and not any(bn.training for bn in bns)
    assert not any(p.requires_grad for bn in bns for p in bn.parameters())
    before = [bn.running_mean.clone() for bn in bns]
    head(torch.randn(4, 64, 14, 14)).sum().backward()
    assert all(torch.equal(a, bn.running_mean) for a, bn in zip(before, bns))
    assert head.layer2[0].conv1.weight.grad is not None  # convs still learn
    # without norm_eval BatchNorm trains and updates its statistics
    free = ResLayer(18, stage=1, norm_eval=False).train()
    bn = free.layer2[0].bn1
    assert bn.training and bn.weight.requires_grad
    free(torch.randn(4, 64, 14, 14))
    assert not torch.equal(bn.running_mean, torch.zeros(128))
    # eval() still turns everything to eval
    assert not any(m.training for m in free.eval().modules())


def test_with_cp_gives_the_same_output_and_gradients():
    torch.manual_seed(0)
    plain = ResLayer(18, stage=1)
    cp = ResLayer(18, stage=1, with_cp=True)
    cp.load_state_dict(plain.state_dict())
    x = torch.randn(2, 64, 14, 14, requires_grad=True)
    outs = []
    for head in (plain, cp):
        out = head(x)
        out.square().sum().backward()
        outs.append((out, head.layer2[0].conv1.weight.grad.clone()))
    assert torch.allclose(outs[0][0], outs[1][0], atol=1e-6)
    assert torch.allclose(outs[0][1], outs[1][1], atol=1e-5)


def test_default_init_is_kaiming_and_unit_norms():
    """mmdetection's default: Kaiming normal (fan_out, ReLU) convs, norms
    weight 1 / bias 0; unlike the backbone no norm starts at zero."""
    torch.manual_seed(0)
    head = ResLayer(50)
    head.init_weights()
    conv = head.layer4[1].conv2.weight  # 512 x 512 x 3 x 3
    assert conv.std().item() == pytest.approx(
        math.sqrt(2 / (512 * 9)), rel=0.02)
    for name in ('bn1', 'bn3'):
        bn = getattr(head.layer4[2], name)
        assert bn.weight.eq(1).all() and bn.bias.eq(0).all()


def _backbone_checkpoint(path, depth):
    """A backbone checkpoint (stem, layer1..layer4) of known values."""
    resnet = ResNet(depth, style='caffe', norm_cfg=FROZEN_BN)
    gen = torch.Generator().manual_seed(1)
    state = {k: torch.randn(v.shape, generator=gen)
             if v.is_floating_point() else v
             for k, v in resnet.state_dict().items()}
    torch.save({'state_dict': state}, path)
    return state


def test_pretrained_loads_the_backbone_checkpoints_stage(tmp_path):
    """init_cfg Pretrained with a whole-backbone file: the ``layer4.*``
    entries fill the shared head, the others are skipped (mmdetection's C4
    configs give the shared head the backbone's own checkpoint)."""
    path = str(tmp_path / 'resnet18_caffe.pth')
    state = _backbone_checkpoint(path, 18)
    head = ResLayer(18, style='caffe', norm_cfg=FROZEN_BN,
                    init_cfg=dict(type='Pretrained', checkpoint=path))
    head.init_weights()
    got = head.state_dict()
    assert got.keys() == {k for k in state if k.startswith('layer4.')}
    assert all(torch.equal(got[k], state[k]) for k in got)
    # the deprecated argument takes the same route
    with pytest.warns(UserWarning, match='deprecated'):
        old = ResLayer(18, style='caffe', norm_cfg=FROZEN_BN, pretrained=path)
    assert old.init_cfg == dict(type='Pretrained', checkpoint=path)
    old.init_weights()
    assert torch.equal(old.layer4[1].conv2.weight,
                       state['layer4.1.conv2.weight'])


def test_errors_name_the_problem():
    with pytest.raises(NotImplementedError, match='dcn'):
        ResLayer(50, dcn=dict(type='DCNv2', deform_groups=1))
    with pytest.raises(ValueError, match='stage must be 1, 2 or 3'):
        ResLayer(50, stage=4)
    with pytest.raises(KeyError, match='invalid depth 42'):
        ResLayer(42)
    with pytest.raises(TypeError, match='pretrained must be'):
        ResLayer(50, pretrained=dict(checkpoint='x.pth'))
    with pytest.raises(ValueError, match='not both'):
        ResLayer(50, pretrained='x.pth',
                 init_cfg=dict(type='Pretrained', checkpoint='x.pth'))
