"""FPN: checkpoint names, level sizes, top-down sums and extra levels by
hand, options."""
import math

import pytest
import torch
import torch.nn as nn
from conftest import read_compat, require_shared

from detkit.models.necks import FPN
from detkit.registry import MODELS

RETINA_FPN = dict(
    type='FPN',
    in_channels=[256, 512, 1024, 2048],
    out_channels=256,
    start_level=1,
    add_extra_convs='on_input',
    num_outs=5)
RPN_FPN = dict(
    type='FPN',
    in_channels=[256, 512, 1024, 2048],
    out_channels=256,
    num_outs=5)
R50 = dict(type='ResNet', depth=50, frozen_stages=1, norm_eval=True)


def shapes(module, prefix=''):
    return {
        prefix + k: (tuple(v.shape), str(v.dtype).replace('torch.', ''))
        for k, v in module.state_dict().items()
    }


def compat_part(name, prefix):
    return {k: v for k, v in read_compat(name).items() if k.startswith(prefix)}


@pytest.mark.parametrize('cfg,model,num_keys', [
    (RETINA_FPN, 'retinanet_r50_fpn', 16),
    (RPN_FPN, 'rpn_r50_fpn', 16),
    (RPN_FPN, 'faster_rcnn_r50_fpn', 16),
])
def test_state_dict_matches_mmdet_checkpoints(cfg, model, num_keys):
    with torch.device('meta'):
        neck = MODELS.build(cfg)
    expected = compat_part(model, 'neck.')
    assert len(expected) == num_keys
    assert shapes(neck, 'neck.') == expected


def test_retinanet_r50_fpn_levels_at_320():
    with torch.device('meta'):
        backbone = MODELS.build(R50).eval()
        neck = MODELS.build(RETINA_FPN)
        feats = backbone(torch.empty(2, 3, 320, 320))
        outs = neck(feats)
    assert [tuple(f.shape) for f in feats] == [(2, 256, 80, 80),
                                               (2, 512, 40, 40),
                                               (2, 1024, 20, 20),
                                               (2, 2048, 10, 10)]
    # P3..P5 from C3..C5, P6 = conv/2 on C5, P7 = conv/2 on P6
    assert [tuple(o.shape) for o in outs] == [(2, 256, s, s)
                                              for s in (40, 20, 10, 5, 3)]


def test_rpn_fpn_levels_with_odd_sizes():
    """Upsampling goes to the lower level's exact size (21 -> 42 but 11 ->
    21), and P6 = max_pool(kernel 1, stride 2) has size ceil(11 / 2)."""
    h, w = 333, 250
    sizes = [(math.ceil(h / s), math.ceil(w / s)) for s in (4, 8, 16, 32)]
    assert sizes == [(84, 63), (42, 32), (21, 16), (11, 8)]
    neck = MODELS.build(
        dict(RPN_FPN, in_channels=[4, 8, 16, 32], out_channels=8))
    feats = [torch.randn(1, c, *s) for c, s in zip([4, 8, 16, 32], sizes)]
    outs = neck(feats)
    assert [tuple(o.shape) for o in outs] == [(1, 8, *s) for s in sizes] + [
        (1, 8, 6, 4)
    ]
    torch.testing.assert_close(outs[4], outs[3][:, :, ::2, ::2])


def _tiny_fpn(lateral_weight=1., fpn_bias=0., num_outs=3, **kwargs):
    """1-channel FPN over 3 levels whose 1x1 laterals multiply by
    ``lateral_weight`` and whose 3x3 convs are the identity plus
    ``fpn_bias`` (also the stride-2 extra convs: they pick every other
    pixel)."""
    neck = FPN([1, 1, 1], 1, num_outs, init_cfg=None, **kwargs)
    with torch.no_grad():
        for m in neck.lateral_convs:
            m.conv.weight.fill_(lateral_weight)
            m.conv.bias.zero_()
        for m in neck.fpn_convs:
            m.conv.weight.zero_()
            m.conv.weight[0, 0, 1, 1] = 1.
            m.conv.bias.fill_(fpn_bias)
    return neck


def _tiny_inputs():
    c3 = torch.zeros(1, 1, 3, 3)
    c4 = torch.tensor([[10., 20.], [30., 40.]]).view(1, 1, 2, 2)
    c5 = torch.tensor([[100.]]).view(1, 1, 1, 1)
    return [c3, c4, c5]


def test_top_down_sum_by_hand():
    outs = _tiny_fpn(fpn_bias=0.5)(_tiny_inputs())
    p5 = [[100.]]
    p4 = [[110., 120.], [130., 140.]]  # C4 + P5 broadcast
    # nearest 2x2 -> 3x3 takes source index floor(i * 2 / 3): 0, 0, 1
    p3 = [[110., 110., 120.], [110., 110., 120.], [130., 130., 140.]]
    assert len(outs) == 3
    for out, expected in zip(outs, (p3, p4, p5)):
        torch.testing.assert_close(out[0, 0], torch.tensor(expected) + 0.5)


def test_max_pool_extra_levels_by_hand():
    outs = _tiny_fpn(num_outs=5)(_tiny_inputs())
    torch.testing.assert_close(outs[3], torch.full((1, 1, 1, 1), 100.))
    torch.testing.assert_close(outs[4], torch.full((1, 1, 1, 1), 100.))


@pytest.mark.parametrize('source,p6', [
    ('on_input', 100. + 1),  # conv(C5)
    (True, 100. + 1),  # True means on_input
    ('on_lateral', 200. + 1),  # conv(2 * C5)
    ('on_output', 200. + 1 + 1),  # conv(fpn_conv(2 * C5))
])
def test_extra_conv_sources_by_hand(source, p6):
    neck = _tiny_fpn(lateral_weight=2., fpn_bias=1., num_outs=5,
                     add_extra_convs=source)
    outs = neck(_tiny_inputs())
    assert neck.add_extra_convs == (
        'on_input' if source is True else source)
    assert outs[3].item() == p6
    assert outs[4].item() == p6 + 1  # P7 = conv(P6)


def test_relu_before_extra_convs_by_hand():
    inputs = _tiny_inputs()
    inputs[2] = -inputs[2]  # C5 = -100 -> P6 = -99
    plain = _tiny_fpn(fpn_bias=1., num_outs=5, add_extra_convs='on_input')
    relu = _tiny_fpn(fpn_bias=1., num_outs=5, add_extra_convs='on_input',
                     relu_before_extra_convs=True)
    assert [o.item() for o in plain(inputs)[3:]] == [-99., -98.]
    assert [o.item() for o in relu(inputs)[3:]] == [-99., 1.]


def test_scale_factor_upsampling_matches_size_on_even_maps():
    feats = [torch.randn(1, 4, 16, 16), torch.randn(1, 4, 8, 8),
             torch.randn(1, 4, 4, 4)]
    by_size = FPN([4, 4, 4], 4, num_outs=3)
    by_factor = FPN([4, 4, 4], 4, num_outs=3,
                    upsample_cfg=dict(scale_factor=2, mode='nearest'))
    by_factor.load_state_dict(by_size.state_dict())
    for a, b in zip(by_size(feats), by_factor(feats)):
        torch.testing.assert_close(a, b)


def test_start_end_level_and_norm_options():
    neck = FPN([2, 4, 8, 16], 8, num_outs=2, start_level=1, end_level=2,
               norm_cfg=dict(type='GN', num_groups=2), no_norm_on_lateral=True)
    sd = shapes(neck)
    assert sorted(sd) == sorted([
        'lateral_convs.0.conv.weight', 'lateral_convs.0.conv.bias',
        'lateral_convs.1.conv.weight', 'lateral_convs.1.conv.bias',
        'fpn_convs.0.conv.weight', 'fpn_convs.0.gn.weight',
        'fpn_convs.0.gn.bias', 'fpn_convs.1.conv.weight',
        'fpn_convs.1.gn.weight', 'fpn_convs.1.gn.bias'
    ])
    assert sd['lateral_convs.1.conv.weight'] == ((8, 8, 1, 1), 'float32')
    feats = [torch.randn(1, c, s, s) for c, s in zip([2, 4, 8, 16],
                                                      [16, 8, 4, 2])]
    assert [tuple(o.shape) for o in neck(feats)] == [(1, 8, 8, 8),
                                                     (1, 8, 4, 4)]
    act = FPN([4, 4], 4, num_outs=2, act_cfg=dict(type='ReLU'))
    assert all(o.min() >= 0 for o in act([torch.randn(1, 4, 4, 4),
                                          torch.randn(1, 4, 2, 2)]))


def test_xavier_uniform_init():
    neck = MODELS.build(RETINA_FPN)
    neck.init_weights()
    for m in neck.modules():
        if isinstance(m, nn.Conv2d):
            fan_in = m.in_channels * m.kernel_size[0] * m.kernel_size[1]
            fan_out = m.out_channels * m.kernel_size[0] * m.kernel_size[1]
            bound = math.sqrt(6 / (fan_in + fan_out))
            assert m.weight.abs().max() <= bound
            assert m.weight.abs().max() > 0.99 * bound
            assert torch.count_nonzero(m.bias) == 0


def test_errors():
    with pytest.raises(ValueError, match='num_outs'):
        FPN([4, 8, 16], 4, num_outs=2)
    with pytest.raises(ValueError, match='end_level'):
        FPN([4, 8, 16], 4, num_outs=3, end_level=1)
    with pytest.raises(ValueError, match='add_extra_convs'):
        FPN([4, 8], 4, num_outs=3, add_extra_convs='on_top')
    with pytest.raises(ValueError, match='3 input maps'):
        FPN([4, 8], 4, num_outs=2)([torch.zeros(1, 4, 4, 4)] * 3)


# ------------------------------------------------------------ FCOS / ATSS
FCOS_ATSS_CONFIGS = [
    'atss/atss_r101_fpn_1x_coco',
    'atss/atss_r101_fpn_8xb8-amp-lsj-200e_coco',
    'atss/atss_r18_fpn_8xb8-amp-lsj-200e_coco',
    'atss/atss_r50_fpn_1x_coco',
    'atss/atss_r50_fpn_8xb8-amp-lsj-200e_coco',
    'fcos/fcos_r101-caffe_fpn_gn-head-1x_coco',
    'fcos/fcos_r101-caffe_fpn_gn-head_ms-640-800-2x_coco',
    'fcos/fcos_r101_fpn_gn-head-center-normbbox-centeronreg-giou_8xb8-amp-'
    'lsj-200e_coco',
    'fcos/fcos_r18_fpn_gn-head-center-normbbox-centeronreg-giou_8xb8-amp-'
    'lsj-200e_coco',
    'fcos/fcos_r50-caffe_fpn_gn-head-center-normbbox-centeronreg-giou_1x_coco',
    'fcos/fcos_r50-caffe_fpn_gn-head-center_1x_coco',
    'fcos/fcos_r50-caffe_fpn_gn-head_1x_coco',
    'fcos/fcos_r50-caffe_fpn_gn-head_4xb4-1x_coco',
    'fcos/fcos_r50-caffe_fpn_gn-head_ms-640-800-2x_coco',
    'fcos/fcos_r50_fpn_gn-head-center-normbbox-centeronreg-giou_8xb8-amp-'
    'lsj-200e_coco',
    'fcos/fcos_x101-64x4d_fpn_gn-head_ms-640-800-2x_coco',
]


def _reference_model_cfg(rel):
    from mmengine.config import Config
    path = require_shared('reference', 'mmdet-3.3.0', 'configs', rel + '.py')
    return Config.fromfile(path).model


@pytest.mark.parametrize('rel', FCOS_ATSS_CONFIGS)
def test_fcos_atss_backbone_and_neck_match_mmdet_keys(rel):
    """mmdetection's FCOS / ATSS configs: the backbone (ResNet caffe or
    pytorch style, ResNeXt) and the FPN (on_output extra convs, with or
    without ReLU) build as written, with the checkpoints' keys."""
    cfg = _reference_model_cfg(rel)
    assert cfg.neck.add_extra_convs == 'on_output'
    with torch.device('meta'):
        backbone = MODELS.build(cfg.backbone)
        neck = MODELS.build(cfg.neck)
    ours = {**shapes(backbone, 'backbone.'), **shapes(neck, 'neck.')}
    expected = {
        k: v
        for k, v in read_compat(f'configs/{rel}').items()
        if k.startswith(('backbone.', 'neck.'))
    }
    assert len(expected) in (136, 334, 640)  # R18, R50, R101 / X101 + 16
    assert ours == expected
    if rel in ('fcos/fcos_r50-caffe_fpn_gn-head_1x_coco',
               'atss/atss_r50_fpn_1x_coco'):
        model = rel.split('/')[0] + '_r50_fpn'
        assert ours == {
            k: v
            for k, v in read_compat(model).items()
            if k.startswith(('backbone.', 'neck.'))
        }


def test_fcos_dcn_config_is_refused_clearly():
    rel = ('fcos/fcos_r50-dcn-caffe_fpn_gn-head-center-normbbox-centeronreg-'
           'giou_1x_coco')
    cfg = _reference_model_cfg(rel)
    with pytest.raises(NotImplementedError, match='dcn'):
        MODELS.build(cfg.backbone)


def test_fcos_levels_at_800x1216():
    """FCOS: P3-P5 from C3-C5, P6 = conv/2 on P5's output, P7 = conv/2 on
    ReLU(P6); an extra level has size ceil(n / 2)."""
    cfg = _reference_model_cfg('fcos/fcos_r50-caffe_fpn_gn-head_1x_coco')
    assert cfg.neck.relu_before_extra_convs is True
    with torch.device('meta'):
        backbone = MODELS.build(cfg.backbone).eval()
        neck = MODELS.build(cfg.neck)
        outs = neck(backbone(torch.empty(1, 3, 800, 1216)))
    assert [tuple(o.shape[2:]) for o in outs] == [(100, 152), (50, 76),
                                                  (25, 38), (13, 19),
                                                  (7, 10)]
    assert neck.fpn_convs[3].conv.in_channels == 256  # on P5's output


@pytest.mark.parametrize('relu,p7', [(False, -198. + 1), (True, 0. + 1)])
def test_on_output_with_relu_before_extra_convs_by_hand(relu, p7):
    """C5 = -100, laterals x2, 3x3 convs identity + 1: P5 = -199, P6 =
    conv(P5) = -198 (no ReLU before the first extra conv), P7 =
    conv(ReLU(P6)) = 1 with relu_before_extra_convs, -197 without."""
    inputs = _tiny_inputs()
    inputs[2] = -inputs[2]
    neck = _tiny_fpn(lateral_weight=2., fpn_bias=1., num_outs=5,
                     add_extra_convs='on_output',
                     relu_before_extra_convs=relu)
    outs = neck(inputs)
    assert [o.item() for o in outs[2:]] == [-199., -198., p7]


@pytest.mark.parametrize('checkpoint,file_name', [
    ('open-mmlab://detectron/resnet50_caffe', 'resnet50_caffe-788b5fa3.pth'),
    ('open-mmlab://detectron2/resnet50_caffe', 'resnet50_msra-5891d200.pth'),
])
def test_fcos_caffe_pretrained_names_read_the_hub_cache(
        tmp_path, monkeypatch, checkpoint, file_name):
    """FCOS's ``open-mmlab://detectron[2]/resnet50_caffe`` resolve through
    mmengine's URL table to ``$TORCH_HOME/hub/checkpoints/<URL basename>``
    (``detectron/resnet101_caffe`` likewise, to
    ``resnet101_caffe-3ad79236.pth``), loaded without a download."""
    from mmengine.runner.checkpoint import get_external_models
    urls = get_external_models()
    assert urls['detectron/resnet101_caffe'].endswith(
        '/resnet101_caffe-3ad79236.pth')
    assert urls[checkpoint.split('://')[1]].endswith('/' + file_name)
    monkeypatch.setenv('TORCH_HOME', str(tmp_path))
    monkeypatch.setattr(torch.hub, '_hub_dir', None)
    cache = tmp_path / 'hub' / 'checkpoints'
    cache.mkdir(parents=True)
    cfg = _reference_model_cfg('fcos/fcos_r50-caffe_fpn_gn-head_1x_coco')
    cfg.backbone.init_cfg.checkpoint = checkpoint
    backbone = MODELS.build(cfg.backbone)
    weights = {
        k: torch.full_like(v, i % 7 + 1)
        for i, (k, v) in enumerate(backbone.state_dict().items())
    }
    torch.save(weights, cache / file_name)
    backbone.init_weights()
    loaded = backbone.state_dict()
    assert all(torch.equal(loaded[k], v) for k, v in weights.items())
