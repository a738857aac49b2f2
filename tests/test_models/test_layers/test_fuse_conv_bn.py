"""fuse_conv_bn: eval-mode BatchNorm folded into the preceding conv."""
import math

import pytest
import torch
import torch.nn as nn
from conftest import REPO_ROOT
from mmengine.config import Config
from mmengine.registry import DefaultScope

from detkit.registry import MODELS
from detkit.models.layers import ConvModule, count_batchnorms, fuse_conv_bn
from detkit.structures import DetDataSample


def _randomize_norms(model, seed=0):
    """Non-trivial running statistics and affine parameters, so that a
    wrong fold cannot pass by accident (the default init is the identity,
    and ResNet zero-inits each block's last norm)."""
    gen = torch.Generator().manual_seed(seed)
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            n = m.num_features
            m.running_mean.copy_(torch.randn(n, generator=gen) * 0.1)
            m.running_var.copy_(torch.rand(n, generator=gen) * 0.5 + 0.75)
            m.weight.data.copy_(torch.rand(n, generator=gen) * 0.5 + 0.75)
            m.bias.data.copy_(torch.randn(n, generator=gen) * 0.1)


def test_single_conv_bn_matches_closed_form():
    block = ConvModule(1, 1, 1, norm_cfg=dict(type='BN'), act_cfg=None)
    block.conv.weight.data.fill_(2.0)
    bn = block.bn
    bn.running_mean.fill_(1.0)
    bn.running_var.fill_(3.0)
    bn.weight.data.fill_(0.5)
    bn.bias.data.fill_(0.25)
    block.eval()
    fuse_conv_bn(block)
    assert isinstance(block.bn, nn.Identity)
    scale = 0.5 / math.sqrt(3.0 + 1e-5)
    # W' = 2 * scale; b' = (0 - 1) * scale + 0.25 (the conv had no bias).
    assert block.conv.weight.item() == pytest.approx(2 * scale, rel=1e-7)
    assert block.conv.bias.item() == pytest.approx(0.25 - scale, rel=1e-7)
    # y = 2 * scale * x + 0.25 - scale at x = 3.
    out = block(torch.full((1, 1, 1, 1), 3.0))
    assert out.item() == pytest.approx(5 * scale + 0.25, rel=1e-6)


def test_training_mode_norms_and_non_adjacent_norms_are_kept():
    seq = nn.Sequential(nn.Conv2d(2, 2, 1), nn.ReLU(), nn.BatchNorm2d(2))
    seq.eval()
    fuse_conv_bn(seq)
    assert count_batchnorms(seq) == 1  # the norm follows a ReLU
    block = ConvModule(2, 2, 1, norm_cfg=dict(type='BN'))
    block.train()
    fuse_conv_bn(block)
    assert isinstance(block.bn, nn.BatchNorm2d)  # batch statistics
    block.eval()
    fuse_conv_bn(block)
    assert count_batchnorms(block) == 0


def _sample(h, w):
    return DetDataSample(metainfo=dict(
        img_shape=(h, w), ori_shape=(h, w), scale_factor=(1.0, 1.0),
        pad_shape=(h, w), batch_input_shape=(h, w)))


def _tiny_retinanet(cfg):
    """The standard RetinaNet with a ResNet-18 and 32-channel FPN/head."""
    cfg.model.backbone.update(depth=18, init_cfg=None)
    cfg.model.neck.update(in_channels=[64, 128, 256, 512], out_channels=32)
    cfg.model.bbox_head.update(in_channels=32, feat_channels=32)


@pytest.mark.parametrize('config,size,num_norms', [
    ('retinanet/retinanet_r50_fpn_1x_coco.py', 96, 20),
    ('ssd/ssdlite_mobilenetv2-scratch_8xb24-600e_coco.py', 320, 76),
])
def test_folded_detector_predicts_like_the_unfolded_one(
        config, size, num_norms):
    cfg = Config.fromfile(f'{REPO_ROOT}/configs/{config}')
    if 'retinanet' in config:
        _tiny_retinanet(cfg)
    cfg.model.bbox_head.num_classes = 3
    torch.manual_seed(0)
    with DefaultScope.overwrite_default_scope('detkit'):
        model = MODELS.build(cfg.model).eval()
    _randomize_norms(model)
    assert count_batchnorms(model) == num_norms
    # The heads' own init scores every box alike, and near-ties would
    # reorder under float rounding: spread the scores.
    for m in model.bbox_head.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.normal_(m.weight, std=2 / math.sqrt(
                m.weight[0].numel()))
    x = torch.randn(1, 3, size, size) * 50
    with torch.no_grad():
        ref_outs = model._forward(x)
        ref = model.predict(x, [_sample(size, size)])[0].pred_instances
    fuse_conv_bn(model)
    assert count_batchnorms(model) == 0
    with torch.no_grad():
        outs = model._forward(x)
        got = model.predict(x, [_sample(size, size)])[0].pred_instances
    for ref_level, level in zip(sum(ref_outs, []), sum(outs, [])):
        # Float rounding differences, relative to the level's magnitude.
        assert (level - ref_level).abs().max() <= 1e-5 * ref_level.abs().max()
    assert len(ref) == len(got) > 20
    # The 20 best detections (well above the tail where a rounding can
    # swap near-equal candidates) are the same boxes.
    torch.testing.assert_close(got.scores[:20], ref.scores[:20], rtol=1e-4,
                               atol=1e-6)
    torch.testing.assert_close(got.bboxes[:20], ref.bboxes[:20], rtol=1e-4,
                               atol=1e-2)
    assert torch.equal(got.labels[:20], ref.labels[:20])
