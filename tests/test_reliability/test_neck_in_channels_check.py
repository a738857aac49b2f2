"""A neck whose in_channels do not match the backbone fails when the
detector is built, naming the key and the value to set."""
import re

import pytest
import torch

from detkit.models.backbones import SSDVGG, MobileNetV2, ResNet
from detkit.models.detectors.checks import (backbone_out_channels,
                                            check_neck_in_channels,
                                            describe_backbone)
from detkit.models.necks import FPN
from detkit.registry import MODELS


@pytest.mark.parametrize('kwargs, channels', [
    # stage i has base * 2**i * expansion channels (1 for 18/34, 4 else)
    (dict(depth=18), [64, 128, 256, 512]),
    (dict(depth=50, base_channels=8), [32, 64, 128, 256]),
    (dict(depth=50, base_channels=8, out_indices=(1, 3)), [64, 256]),
    (dict(depth=18, base_channels=8, out_indices=(1, 2, 3)), [16, 32, 64]),
    (dict(depth=34, num_stages=3, strides=(1, 2, 2), dilations=(1, 1, 1),
          out_indices=(2, )), [256]),
])
def test_resnet_out_channels(kwargs, channels):
    backbone = ResNet(**kwargs).eval()
    assert backbone_out_channels(backbone) == channels
    # ...which is what its forward returns.
    with torch.no_grad():
        outs = backbone(torch.zeros(1, 3, 32, 32))
    assert [o.shape[1] for o in outs] == channels


def test_mobilenet_and_ssdvgg_out_channels():
    # layer1..7: 16, 24, 32, 64, 96, 160, 320; 7 is conv2 (1280)
    assert backbone_out_channels(MobileNetV2(out_indices=(4, 7))) == [96,
                                                                     1280]
    assert backbone_out_channels(MobileNetV2(out_indices=(0, 2))) == [16, 32]
    # conv4_3 (index 22) and fc7 (34)
    vgg = SSDVGG(depth=16)
    assert backbone_out_channels(vgg) == [512, 1024]
    assert describe_backbone(vgg) == ('SSDVGG-16, '
                                      'out_feature_indices=(22, 34)')


def test_unknown_backbones_are_not_checked():
    conv = torch.nn.Conv2d(3, 8, 3)
    assert backbone_out_channels(conv) is None
    check_neck_in_channels(conv, dict(in_channels=[1, 2]))  # no error
    conv.out_channels = [8]  # a backbone that states its channels
    assert backbone_out_channels(conv) == [8]
    with pytest.raises(ValueError, match=r'outputs \[8\] channels'):
        check_neck_in_channels(conv, dict(in_channels=[16]))


def test_error_names_key_backbone_and_expected_value():
    # ResNet-50 at 1/8 width: stages of 32, 64, 128, 256 channels.
    backbone = ResNet(depth=50, base_channels=8, out_indices=(1, 2, 3))
    message = ('model.neck.in_channels is [32, 64, 128, 256], but the '
               'backbone (ResNet-50, out_indices=(1, 2, 3)) outputs '
               '[64, 128, 256] channels; set '
               'model.neck.in_channels=[64, 128, 256]')
    with pytest.raises(ValueError, match=re.escape(message)):
        check_neck_in_channels(
            backbone, dict(type='FPN', in_channels=[32, 64, 128, 256]))
    # A built neck is read the same way; matching channels pass.
    with pytest.raises(ValueError, match=re.escape(message)):
        check_neck_in_channels(backbone, FPN([32, 64, 128, 256], 8, 4))
    check_neck_in_channels(backbone, FPN([64, 128, 256], 8, 3))
    check_neck_in_channels(backbone, None)
    check_neck_in_channels(backbone, dict(type='SomeNeck'))  # no key


def _retinanet(**neck):
    return dict(
        type='RetinaNet',
        backbone=dict(type='ResNet', depth=18, base_channels=8,
                      out_indices=(1, 2, 3)),
        neck=dict(dict(type='FPN', in_channels=[16, 32, 64], out_channels=8,
                       num_outs=3), **neck),
        bbox_head=dict(
            type='RetinaHead', num_classes=2, in_channels=8, feat_channels=8,
            stacked_convs=1,
            anchor_generator=dict(type='AnchorGenerator',
                                  octave_base_scale=4, scales_per_octave=1,
                                  ratios=[1.0], strides=[8, 16, 32]),
            bbox_coder=dict(type='DeltaXYWHBBoxCoder')),
        test_cfg=dict(nms_pre=10, score_thr=0.05,
                      nms=dict(type='nms', iou_threshold=0.5),
                      max_per_img=10))


def test_single_stage_detector_checks_at_construction():
    model = MODELS.build(_retinanet())
    assert model.neck.in_channels == [16, 32, 64]
    with pytest.raises(ValueError) as err:
        MODELS.build(_retinanet(in_channels=[64, 128, 256]))
    assert str(err.value) == (
        'model.neck.in_channels is [64, 128, 256], but the backbone '
        '(ResNet-18, out_indices=(1, 2, 3)) outputs [16, 32, 64] channels; '
        'set model.neck.in_channels=[16, 32, 64]')
