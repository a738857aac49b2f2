"""mmdetection configs (default_scope='mmdet') run in detkit's scope: the
rewrite, its one log line, and every entry point that loads a config."""
import argparse
import logging
import os.path as osp
import runpy
import sys

import pytest
from mmengine.config import Config
from mmengine.logging import MMLogger

from conftest import REPO_ROOT, require_shared
from detkit.utils import to_detkit_scope

LINE = "has default_scope='mmdet'; building it with detkit's registries"


class _Lines(logging.Handler):

    def __init__(self):
        super().__init__(logging.INFO)
        self.lines = []

    def emit(self, record):
        self.lines.append(record.getMessage())


@pytest.fixture
def scope_lines():
    """The scope lines the current mmengine logger receives."""
    logger = MMLogger.get_current_instance()
    handler = _Lines()
    logger.addHandler(handler)
    level = logger.level
    logger.setLevel(logging.INFO)
    yield lambda: [line for line in handler.lines if 'building it with' in
                   line]
    logger.removeHandler(handler)
    logger.setLevel(level)


def _mmdet_cfg(**extra):
    return Config(dict(default_scope='mmdet', model=dict(type='RetinaNet'),
                       **extra))


def test_mmdet_scope_becomes_detkit_with_one_line(scope_lines):
    cfg = _mmdet_cfg()
    assert to_detkit_scope(cfg, source='retina.py') is cfg
    assert cfg.default_scope == 'detkit'
    assert scope_lines() == [f"config retina.py {LINE} (scope 'detkit')"]
    to_detkit_scope(cfg)  # already converted: nothing more to say
    assert len(scope_lines()) == 1
    to_detkit_scope(_mmdet_cfg(), log=False)
    assert len(scope_lines()) == 1


def test_scoped_types_and_dicts_are_rewritten(scope_lines):
    cfg = Config(dict(
        model=dict(type='mmdet.RetinaNet', backbone=dict(
            type='ResNet', _scope_='mmdet')),
        custom_hooks=[dict(type='mmdet.NumClassCheckHook'),
                      dict(type='mmengine.EMAHook')]))
    to_detkit_scope(cfg, source='x.py')
    assert cfg.default_scope == 'detkit'  # none given: detkit's
    assert cfg.model.type == 'detkit.RetinaNet'
    assert cfg.model.backbone._scope_ == 'detkit'
    assert [h.type for h in cfg.custom_hooks] == [
        'detkit.NumClassCheckHook', 'mmengine.EMAHook']
    assert scope_lines() == [
        "config x.py names the mmdet scope; building it with detkit's "
        "registries (scope 'detkit') (3 _scope_/type entries naming mmdet "
        'rewritten)']


def test_other_scopes_are_left_alone(scope_lines):
    cfg = Config(dict(default_scope='mmyolo', model=dict(type='YOLO')))
    to_detkit_scope(cfg)
    assert cfg.default_scope == 'mmyolo'
    cfg = Config(dict(model=dict(type='RetinaNet')))
    to_detkit_scope(cfg)
    assert cfg.default_scope == 'detkit'
    assert scope_lines() == []


def _reference(*parts):
    return require_shared('reference', 'mmdet-3.3.0', 'configs', *parts)


def test_tools_and_apis_take_mmdet_configs(scope_lines, tmp_path):
    """launch.load_config (train.py / test.py / dist_*.sh), the analysis
    tools' loaders, print_config.py, init_detector and DetInferencer: each
    takes an mmdetection config file and says so once."""
    from detkit.apis import DetInferencer, init_detector
    from detkit.engine.launch import load_config
    path = _reference('retinanet', 'retinanet_r18_fpn_1x_coco.py')
    expected = [f"config {path} {LINE} (scope 'detkit')"]

    args = argparse.Namespace(cfg_options=None, launcher='none',
                              local_rank=0, work_dir=None)
    assert load_config(path, args).default_scope == 'detkit'
    assert scope_lines() == expected

    tools = osp.join(REPO_ROOT, 'tools', 'analysis_tools')
    sys.path.insert(0, tools)
    try:
        for name, fn in (('benchmark.py', '_load_cfg'),
                         ('get_flops.py', '_load_cfg'),
                         ('browse_dataset.py', '_load_cfg'),
                         ('results_io.py', 'load_cfg')):
            ns = runpy.run_path(osp.join(tools, name), run_name='scope_test')
            assert ns[fn](path).default_scope == 'detkit', name
    finally:
        sys.path.remove(tools)
    assert scope_lines() == expected * 5
    printed = runpy.run_path(
        osp.join(REPO_ROOT, 'tools', 'misc', 'print_config.py'),
        run_name='scope_test')['main']([path])
    assert "default_scope = 'detkit'" in printed
    assert scope_lines() == expected * 6

    model = init_detector(path, device='cpu')
    assert type(model).__name__ == 'RetinaNet'
    assert model.cfg.default_scope == 'detkit'
    assert scope_lines() == expected * 7
    inferencer = DetInferencer(path, device='cpu')
    assert inferencer.model.cfg.default_scope == 'detkit'
    assert scope_lines() == expected * 8  # resolved once, built once


def test_train_tool_runs_an_mmdet_config(tmp_path, bccd_dir, scope_lines):
    """tools/train.py on a config that inherits mmdetection's own file: one
    scope line, and it trains."""
    base = _reference('retinanet', 'retinanet_r18_fpn_1x_coco.py')
    cfg = tmp_path / 'small.py'
    cfg.write_text(f'''
_base_ = {base!r}
model = dict(backbone=dict(init_cfg=None),
             neck=dict(out_channels=8),
             bbox_head=dict(num_classes=3, in_channels=8, feat_channels=8,
                            stacked_convs=1))
train_dataloader = dict(
    batch_size=1, num_workers=0, persistent_workers=False,
    dataset=dict(data_root={bccd_dir + '/'!r}, ann_file='train.json',
                 data_prefix=dict(img='images/'), indices=2,
                 metainfo=dict(classes=('RBC', 'WBC', 'Platelets')),
                 pipeline=[dict(type='LoadImageFromFile'),
                           dict(type='LoadAnnotations', with_bbox=True),
                           dict(type='Resize', scale=(160, 120),
                                keep_ratio=True),
                           dict(type='PackDetInputs')]))
train_cfg = dict(max_epochs=1)
val_cfg = None
val_dataloader = None
val_evaluator = None
default_hooks = dict(checkpoint=dict(save_best=None))
experiment_name = 'mmdet_scope_train'
''')
    train = runpy.run_path(osp.join(REPO_ROOT, 'tools', 'train.py'),
                           run_name='scope_test_train')
    train['main']([str(cfg), '--work-dir', str(tmp_path / 'work')])
    assert scope_lines() == [f"config {cfg} {LINE} (scope 'detkit')"]
    assert osp.isfile(tmp_path / 'work' / 'epoch_1.pth')
