"""The backbone of every mmdetection 3.3.0 config of RetinaNet, SSD, RPN and
Faster R-CNN builds in detkit as written (every argument accepted) with
mmdetection's state_dict keys and shapes, and its pretrained-weight name
resolves to a file in the torch hub cache."""
import glob
import os.path as osp

import pytest
import torch
from conftest import read_compat, require_shared
from mmengine.config import Config
from mmengine.runner.checkpoint import (get_external_models,
                                        get_torchvision_models)

from detkit.registry import MODELS

FOLDERS = ('retinanet', 'ssd', 'rpn', 'faster_rcnn')


@pytest.fixture(scope='module')
def backbones():
    """``{config path relative to configs/, without .py: backbone cfg}``."""
    root = require_shared('reference', 'mmdet-3.3.0', 'configs')
    paths = [p for folder in FOLDERS
             for p in sorted(glob.glob(osp.join(root, folder, '*.py')))
             if not p.endswith('retinanet_tta.py')]  # a fragment, no model
    return {osp.relpath(p, root)[:-3]: Config.fromfile(p).model.backbone
            for p in paths}


def test_every_reference_backbone_builds_with_mmdet_keys(backbones):
    checked = 0
    for rel, backbone_cfg in backbones.items():
        with torch.device('meta'):
            backbone = MODELS.build(backbone_cfg)
        ours = {f'backbone.{k}': tuple(v.shape)
                for k, v in backbone.state_dict().items()}
        expected = {k: shape for k, (shape, _) in
                    read_compat(f'configs/{rel}').items()
                    if k.startswith('backbone.')}
        assert ours == expected, rel
        checked += 1
    print(f'{checked} reference backbones build with mmdetection keys')
    assert checked == 78


def test_every_reference_pretrained_name_resolves_to_a_url(backbones):
    """``torchvision://`` and ``open-mmlab://`` names are looked up in
    mmengine's URL tables (see ``detkit/engine/checkpoint_loaders.py``);
    every name the reference configs use is in them."""
    names = set()
    for backbone_cfg in backbones.values():
        init_cfg = backbone_cfg.get('init_cfg')
        if init_cfg and init_cfg.get('type') == 'Pretrained':
            names.add(init_cfg['checkpoint'])
    tables = {'torchvision': get_torchvision_models(),
              'open-mmlab': get_external_models()}
    for name in sorted(names):
        if name.startswith('https://'):
            continue
        scheme, key = name.split('://', 1)
        assert key in tables[scheme], name
    assert {n for n in names if n.startswith('open-mmlab://')} == {
        'open-mmlab://detectron2/resnet50_caffe',
        'open-mmlab://detectron2/resnet101_caffe',
        'open-mmlab://resnext101_32x4d', 'open-mmlab://resnext101_64x4d',
        'open-mmlab://detectron2/resnext101_32x8d',
        'open-mmlab://vgg16_caffe'
    }
