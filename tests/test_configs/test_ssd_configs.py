"""SSD512 and SSDLite take SSD300's data pipelines from
configs/_base_/datasets/coco_ssd.py and change only the resize; all three
data settings equal mmdetection's own configs."""
import os.path as osp

import pytest
from conftest import REPO_ROOT, require_shared
from mmengine.config import Config

SSD = osp.join(REPO_ROOT, 'configs', 'ssd')
CONFIGS = [('ssd300_coco.py', 300), ('ssd512_coco.py', 512),
           ('ssdlite_mobilenetv2-scratch_8xb24-600e_coco.py', 320)]
LOADERS = ('train_dataloader', 'val_dataloader', 'test_dataloader')


def _pipelines(cfg):
    return (cfg.train_dataloader.dataset.dataset.pipeline,
            cfg.test_dataloader.dataset.pipeline)


def _without_none_backend_args(value):
    """``value`` without ``backend_args=None`` entries (the default)."""
    if isinstance(value, dict):
        return {k: _without_none_backend_args(v) for k, v in value.items()
                if not (k == 'backend_args' and v is None)}
    if isinstance(value, (list, tuple)):
        return [_without_none_backend_args(v) for v in value]
    return value


@pytest.mark.parametrize('name,size', CONFIGS[1:])
def test_pipelines_are_ssd300_s_with_their_own_resize(name, size):
    base_train, base_test = _pipelines(
        Config.fromfile(osp.join(SSD, 'ssd300_coco.py')))
    train, test = _pipelines(Config.fromfile(osp.join(SSD, name)))
    for mine, base in ((train, base_train), (test, base_test)):
        assert [step.type for step in mine] == [step.type for step in base]
        for step, base_step in zip(mine, base):
            if step.type == 'Resize':
                assert step == dict(base_step, scale=(size, size))
                assert base_step.scale == (300, 300)
            else:
                assert step == base_step
    cfg = Config.fromfile(osp.join(SSD, name))
    assert cfg.val_dataloader.dataset.pipeline == test
    assert cfg.train_dataloader.dataset.type == 'RepeatDataset'
    assert cfg.train_dataloader.dataset.times == 5


@pytest.mark.parametrize('name,size', CONFIGS)
def test_data_settings_equal_mmdetection_s(name, size):
    reference = Config.fromfile(
        require_shared('reference', 'mmdet-3.3.0', 'configs', 'ssd', name))
    cfg = Config.fromfile(osp.join(SSD, name))
    for key in LOADERS:
        mine, theirs = cfg[key].to_dict(), reference[key].to_dict()
        if name.startswith('ssdlite'):
            # mmdetection's SSDLite config leaves out backend_args=None,
            # which the shared SSD base spells out.
            mine = _without_none_backend_args(mine)
            theirs = _without_none_backend_args(theirs)
        assert mine == theirs, key
    assert _pipelines(cfg)[0][4].scale == (size, size)
