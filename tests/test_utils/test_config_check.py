"""detkit.utils.config_check and tools/misc/check_mmdet_configs.py on
detkit's own configs and on configs broken on purpose (no ../shared
needed)."""
import os.path as osp
import runpy
import textwrap

import pytest
import torch
from mmengine.config import Config
from mmengine.registry import DefaultScope

from conftest import REPO_ROOT
from detkit.registry import MODELS
from detkit.utils.config_check import check_config
from detkit.utils.config_tree import check_tree, find_configs, format_table
from detkit.utils.key_lists import (build_model_cheaply, compare_keys,
                                    read_key_list, state_dict_keys)

CONFIGS = osp.join(REPO_ROOT, 'configs')
TOOL = osp.join(REPO_ROOT, 'tools', 'misc', 'check_mmdet_configs.py')


@pytest.mark.parametrize('rel', [
    'retinanet/retinanet_r18_fpn_1x_coco.py',
    'ssd/ssdlite_mobilenetv2-scratch_8xb24-600e_coco.py',
    'rpn/rpn_r50-caffe-c4_1x_coco.py',
    'faster_rcnn/faster-rcnn_r50-caffe-dc5_1x_coco.py',
    'faster_rcnn/faster-rcnn_x101-32x8d_fpn_ms-3x_coco.py',
])
def test_meta_build_has_the_cpu_build_keys_shapes_and_dtypes(rel):
    cfg = Config.fromfile(osp.join(CONFIGS, rel))
    meta = build_model_cheaply(cfg.model)
    assert {p.device.type for p in meta.parameters()} == {'meta'}
    with DefaultScope.overwrite_default_scope('detkit'):
        cpu = MODELS.build(cfg.model)
    assert list(state_dict_keys(meta).items()) == list(
        state_dict_keys(cpu).items())
    assert sum(p.numel() for p in meta.parameters()) == sum(
        p.numel() for p in cpu.parameters())


def _write(path, text):
    path.write_text(textwrap.dedent(text))
    return str(path)


def test_key_list_round_trip_and_differences(tmp_path):
    model = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3),
                                torch.nn.BatchNorm2d(4))
    keys = state_dict_keys(model)
    assert keys['1.num_batches_tracked'] == ((), 'int64')
    assert keys['0.weight'] == ((4, 3, 3, 3), 'float32')
    lines = ['# a comment'] + [
        f"{k}\t{'x'.join(map(str, s)) or '-'}\t{d}"
        for k, (s, d) in keys.items()
    ]
    path = tmp_path / 'keys.txt'
    path.write_text('\n'.join(lines) + '\n')
    assert read_key_list(str(path)) == keys
    assert compare_keys(keys, keys) == []

    other = dict(keys)
    other['0.weight'] = ((4, 3, 1, 1), 'float32')
    del other['0.bias']
    other['2.weight'] = ((1, ), 'float32')
    assert compare_keys(keys, other) == [
        '1 keys of the list missing in the model: 2.weight',
        '1 model keys not in the list: 0.bias',
        '1 shape/dtype mismatches: 0.weight (model 4x3x3x3 float32, list '
        '4x3x1x1 float32)'
    ]
    bad = tmp_path / 'bad.txt'
    bad.write_text('0.weight 4x3x3x3 float32\n')
    with pytest.raises(ValueError, match=r'bad.txt:1: expected key<TAB>'):
        read_key_list(str(bad))


def test_every_stage_reports_what_fails(tmp_path):
    base = osp.join(CONFIGS, 'retinanet', 'retinanet_r18_fpn_1x_coco.py')
    path = _write(tmp_path / 'broken.py', f'''
        _base_ = {base!r}
        train_pipeline = [dict(type='LoadImageFromFile'),
                          dict(type='RandomResizee', scale=(1333, 800))]
        train_dataloader = dict(dataset=dict(pipeline=train_pipeline))
        custom_hooks = [dict(type='NoSuchHook')]
        val_evaluator = dict(metric='segm')
        param_scheduler = [dict(type='LinearLR', start_factor=0.1,
                                by_epoch=False, begin=0, end=5,
                                warmup='x')]
        ''')
    result = check_config(path, name='broken.py')
    assert not result.ok
    stages = [stage for stage, _ in result.failures]
    assert stages == ['pipelines', 'datasets', 'evaluators', 'runtime',
                      'schedule']
    reasons = dict(result.failures)
    assert reasons['pipelines'].startswith(
        "train_dataloader RandomResizee: KeyError: 'RandomResizee' is not in "
        "the transform registry (scope 'detkit'). Closest registered names: ")
    assert 'RandomResizee' in reasons['datasets']
    assert reasons['runtime'].startswith(
        "custom_hooks[0]: KeyError: 'NoSuchHook' is not in the hook "
        'registry')
    assert "metric must be 'bbox'" in reasons['evaluators']
    assert "'warmup'" in reasons['schedule']
    assert result.reason.startswith('pipelines: train_dataloader ')
    assert result.reason.endswith('(+4 more)')


def test_model_and_key_list_failures(tmp_path):
    base = osp.join(CONFIGS, 'retinanet', 'retinanet_r18_fpn_1x_coco.py')
    path = _write(tmp_path / 'bad_model.py', f'''
        _base_ = {base!r}
        model = dict(bbox_head=dict(num_clases=3))
        ''')
    result = check_config(path)
    assert result.failures == [(
        'model', "TypeError: RetinaHead (from the model registry) got an "
        "unexpected config key 'num_clases'. Did you mean 'num_classes'?")]
    assert result.num_keys is None

    path = _write(tmp_path / 'three_classes.py', f'''
        _base_ = {base!r}
        model = dict(bbox_head=dict(num_classes=3))
        ''')
    result = check_config(path)
    ((stage, reason), ) = result.failures
    assert stage == 'classes'
    assert reason.startswith(
        'ValueError: model.bbox_head.num_classes is 3, but the train '
        "dataset has 80 classes ('person', 'bicycle', ")
    assert 'Set model.bbox_head.num_classes=80' in reason

    keys = tmp_path / 'keys.txt'
    keys.write_text('backbone.conv1.weight\t64x3x7x7\tfloat32\n')
    result = check_config(base, key_list=str(keys))
    assert [stage for stage, _ in result.failures] == ['keys']
    assert result.failures[0][1].startswith(
        'ValueError: 155 model keys not in the list: backbone.bn1.weight, ')
    result = check_config(base, key_list=str(tmp_path / 'none.txt'))
    assert result.ok and result.reason == f'no key list {tmp_path}/none.txt'


def test_fragments_are_skipped_and_trees_listed(tmp_path):
    tta = osp.join(CONFIGS, 'retinanet', 'retinanet_tta.py')
    assert check_config(tta).skipped.startswith('no model')
    rels = find_configs(CONFIGS)
    assert 'retinanet/retinanet_tta.py' in rels
    assert not [r for r in rels if r.startswith(('_base_', 'common',
                                                 'quickstart'))]
    assert find_configs(CONFIGS, ['quickstart']) == [
        'quickstart/retinanet_r18_fpn_shapes.py']


def test_tool_prints_a_table_and_exits_1_on_a_failure(tmp_path, capsys):
    tool = runpy.run_path(TOOL, run_name='check_configs_test')
    (tmp_path / 'good').mkdir()
    (tmp_path / 'bad').mkdir()
    base = osp.join(CONFIGS, 'rpn', 'rpn_r50_fpn_1x_coco.py')
    _write(tmp_path / 'good' / 'rpn.py', f'_base_ = {base!r}\n')
    _write(tmp_path / 'bad' / 'rpn.py',
           f"_base_ = {base!r}\nmodel = dict(rpn_head=dict(type='RPNHeed'))\n")
    results = tool['main']([str(tmp_path), '--folders', 'good'])
    assert [(r.config, r.ok) for r in results] == [('good/rpn.py', True)]
    out = capsys.readouterr().out
    assert out.splitlines()[-1] == '1 of 1 configs build; 0 fail'
    with pytest.raises(SystemExit) as exc:
        tool['main']([str(tmp_path)])
    assert exc.value.code == 1
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split() == ['config', 'result', 'keys', 'reason']
    assert lines[2].split()[:2] == ['bad/rpn.py', 'FAILS']
    assert "model: KeyError: 'RPNHeed' is not in the model" in lines[2]
    assert lines[3].split()[:3] == ['good/rpn.py', 'builds', '340']
    assert lines[-1] == '1 of 2 configs build; 1 fail'
    with pytest.raises(SystemExit, match='no such file'):
        tool['main']([str(tmp_path / 'nowhere')])


def test_table_format():
    results = check_tree(osp.join(CONFIGS, 'rpn', 'rpn_r50_fpn_1x_coco.py'))
    assert format_table(results).splitlines() == [
        'config                  result  keys  reason',
        '----------------------  ------  ----  ------',
        'rpn_r50_fpn_1x_coco.py  builds  340',
        '1 of 1 configs build; 0 fail',
    ]
