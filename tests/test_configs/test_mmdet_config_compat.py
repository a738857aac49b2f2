"""mmdetection 3.3.0's own configs of RetinaNet, SSD, RPN, Faster R-CNN,
FCOS and ATSS run in detkit as they are, and detkit ships the same config
tree (except the one config detkit refuses: DCN needs compiled ops).

For every config (``../shared/reference/mmdet-3.3.0/configs``) and for
detkit's copy of it (``configs/``, same relative path), everything a run
builds must build (``detkit.utils.config_check``: model on the meta device,
pipelines, datasets, evaluators, hooks, schedule, TTA model) and the
model's state_dict must hold exactly the keys, shapes and dtypes of the
model mmdetection builds from it (``../shared/compat/configs``). The tests
print the table; a failure lists every config that does not build or
match, with its stage and reason. A few small configs also run one
training and one prediction step.
"""
import os
import os.path as osp

import pytest
import torch
from mmengine.config import Config
from mmengine.registry import DefaultScope
from mmengine.structures import InstanceData

from conftest import REPO_ROOT, require_shared
from detkit.registry import MODELS
from detkit.structures import DetDataSample
from detkit.utils.config_check import check_config, first_line
from detkit.utils.config_tree import (DEFAULT_FOLDERS, find_configs,
                                      format_table, is_refused, mark_refused)
from detkit.utils.key_lists import (build_model_cheaply, compare_keys,
                                    key_list_for, read_key_list,
                                    state_dict_keys)

CONFIGS = osp.join(REPO_ROOT, 'configs')
# retinanet 24, ssd 3, rpn 11, faster_rcnn 40, fcos 11, atss 5;
# retinanet_tta.py is a fragment (no model) that the 1x RetinaNet configs
# inherit, and detkit refuses (and does not ship) the DCN FCOS config.
NUM_RUNNABLE = 94
FRAGMENTS = ['retinanet/retinanet_tta.py']
REFUSED = [
    'fcos/fcos_r50-dcn-caffe_fpn_gn-head-center-normbbox-centeronreg-giou_'
    '1x_coco.py'
]
# detkit configs with no counterpart in those four folders
EXTRAS = ['quickstart/retinanet_r18_fpn_shapes.py', 'ssd/ssd300_voc0712.py']


def _reference_root():
    return require_shared('reference', 'mmdet-3.3.0', 'configs')


def _failures(results):
    return '\n'.join(f'  {r.config}: {r.reason}' for r in results
                     if not r.ok and not r.skipped)


def test_every_reference_config_builds_and_matches_its_key_list():
    root = _reference_root()
    compat = require_shared('compat', 'configs')
    results = [
        mark_refused(check_config(osp.join(root, rel),
                                  key_list_for(compat, rel), rel))
        for rel in find_configs(root, DEFAULT_FOLDERS)
    ]
    table = format_table(results)
    print(f'\n{root}:\n{table}')
    assert [r.config for r in results if is_refused(r)] == REFUSED
    refused_row, = [line for line in table.splitlines()
                    if line.startswith(REFUSED[0])]
    assert refused_row.split()[1] == 'refused' and 'dcn' in refused_row
    assert table.splitlines()[-1].endswith('; 1 refused; 1 skipped')
    refusal = [r.skipped for r in results if is_refused(r)][0]
    assert refusal.startswith('refused: ResNet: dcn') and \
        'compiled ops' in refusal
    assert [r.config for r in results
            if r.skipped and not is_refused(r)] == FRAGMENTS
    runnable = [r for r in results if not r.skipped]
    assert len(runnable) == NUM_RUNNABLE
    assert not [r.config for r in runnable if r.key_list is None]
    ok = sum(r.ok for r in runnable)
    assert ok == NUM_RUNNABLE, (
        f"{ok} of {NUM_RUNNABLE} mmdetection configs build and match their "
        f'key lists; {NUM_RUNNABLE - ok} fail:\n{_failures(runnable)}')


def test_every_detkit_config_builds():
    """All of configs/ (the copies and detkit's own quick start and VOC
    configs), without key lists: this runs on a user's clone too."""
    folders = sorted(
        d for d in os.listdir(CONFIGS)
        if osp.isdir(osp.join(CONFIGS, d)) and d not in ('_base_', 'common'))
    results = [check_config(osp.join(CONFIGS, rel), name=rel)
               for rel in find_configs(CONFIGS, folders)]
    print(f'\n{CONFIGS}:\n{format_table(results)}')
    assert [r.config for r in results if r.skipped] == FRAGMENTS
    runnable = [r for r in results if not r.skipped]
    assert len(runnable) == NUM_RUNNABLE + len(EXTRAS)
    ok = sum(r.ok for r in runnable)
    assert ok == len(runnable), (
        f'{ok} of {len(runnable)} detkit configs build; '
        f'{len(runnable) - ok} fail:\n{_failures(runnable)}')


def test_every_detkit_copy_matches_its_key_list():
    """The model of each copy (built on the meta device) has the keys,
    shapes and dtypes of the model mmdetection builds from the original."""
    compat = require_shared('compat', 'configs')
    problems, models = {}, 0
    for rel in find_configs(_reference_root(), DEFAULT_FOLDERS):
        if rel in REFUSED:
            continue
        cfg = Config.fromfile(osp.join(CONFIGS, rel))
        if 'model' not in cfg:
            continue
        models += 1
        try:
            model = build_model_cheaply(cfg.model)
        except Exception as err:  # noqa: BLE001 - listed below
            problems[rel] = [f'model: {first_line(err)}']
            continue
        diff = compare_keys(state_dict_keys(model),
                            read_key_list(key_list_for(compat, rel)))
        if diff:
            problems[rel] = [f'keys: {d}' for d in diff]
    assert models == NUM_RUNNABLE
    ok = models - len(problems)
    print(f"{ok} of {models} detkit copies build mmdetection's keys")
    assert not problems, (
        f"{ok} of {models} detkit copies build models with mmdetection's "
        f'keys; {len(problems)} fail:\n' + '\n'.join(
            f'  {rel}: {"; ".join(p)}' for rel, p in problems.items()))


def test_detkit_ships_every_reference_config():
    reference = set(find_configs(_reference_root(), DEFAULT_FOLDERS))
    ours = set(find_configs(CONFIGS, DEFAULT_FOLDERS))
    assert len(reference) == NUM_RUNNABLE + len(FRAGMENTS) + len(REFUSED)
    assert sorted(reference - ours) == REFUSED
    # detkit's extra: SSD300 on VOC, which mmdetection keeps in pascal_voc/
    assert sorted(ours - reference) == ['ssd/ssd300_voc0712.py']
    for rel in sorted(ours):
        cfg = Config.fromfile(osp.join(CONFIGS, rel))
        assert cfg.get('default_scope', 'detkit') == 'detkit', rel


# --------------------------------------------- same values as mmdetection
def _flatten(node, prefix=''):
    if isinstance(node, dict):
        out = {}
        for key, value in node.items():
            out.update(_flatten(value, f'{prefix}.{key}' if prefix else key))
        return out
    if isinstance(node, (list, tuple)):
        out = {f'{prefix}#len': len(node)}
        for i, value in enumerate(node):
            out.update(_flatten(value, f'{prefix}[{i}]'))
        return out
    return {prefix: node}


def _hook_types(hooks):
    return [h['type'] for h in hooks or []]


# Where detkit's copy may differ from mmdetection's file, and why.
RUNTIME = {
    'default_scope',  # 'detkit' instead of 'mmdet'
    # detkit keeps the best checkpoint by the first metric
    'default_hooks.checkpoint.save_best',
}
SSD = {
    # 'SSD' is detkit's name for the same SingleStageDetector (same keys)
    'model.type',
    # mmdetection's ssd300.py sets a top-level cudnn_benchmark that no
    # component reads (env_cfg.cudnn_benchmark is the setting)
    'cudnn_benchmark',
}


def _differences(rel):
    ours = Config.fromfile(osp.join(CONFIGS, rel)).to_dict()
    theirs = Config.fromfile(osp.join(_reference_root(), rel)).to_dict()
    # detkit's runtime adds its own hooks after mmdetection's
    ours_hooks = _hook_types(ours.pop('custom_hooks', None))
    theirs_hooks = _hook_types(theirs.pop('custom_hooks', None))
    problems = []
    if ours_hooks[:len(theirs_hooks)] != theirs_hooks:
        problems.append(f'custom_hooks: mmdet {theirs_hooks}, detkit '
                        f'{ours_hooks}')
    allowed = RUNTIME | (SSD if rel.startswith('ssd/') else set())
    a, b = _flatten(theirs), _flatten(ours)
    for key in sorted(set(a) | set(b)):
        if key in allowed or a.get(key, '<absent>') == b.get(key, '<absent>'):
            continue
        # backend_args=None is the default, the same as leaving it out
        if key.endswith('.backend_args') and a.get(key) is None and b.get(
                key) is None:
            continue
        problems.append(f'{key}: mmdet {a.get(key, "<absent>")!r}, detkit '
                        f'{b.get(key, "<absent>")!r}')
    return problems


def test_detkit_copies_hold_mmdetections_values():
    """Merged through their _base_ chains, detkit's files hold the same
    model, data, schedule and TTA settings as mmdetection's, except for
    the listed runtime differences."""
    rels = [rel for rel in find_configs(_reference_root(), DEFAULT_FOLDERS)
            if rel not in REFUSED]
    problems = {rel: _differences(rel) for rel in rels}
    problems = {rel: p for rel, p in problems.items() if p}
    assert not problems, '\n'.join(
        f'{rel}:\n    ' + '\n    '.join(p) for rel, p in problems.items())


# ------------------------------------------ one step of the small ones
def _batch(shape, num_images=2):
    """Random images of ``shape`` with two ground-truth boxes each (two
    images: BatchNorm in training needs more than one value per channel
    on SSDLite's 1x1 last level)."""
    h, w = shape
    gen = torch.Generator().manual_seed(0)
    inputs, samples = [], []
    for i in range(num_images):
        inputs.append(torch.randint(0, 256, (3, h, w), dtype=torch.uint8,
                                    generator=gen))
        sample = DetDataSample(metainfo=dict(
            img_id=i, img_path=None, ori_shape=shape, img_shape=shape,
            scale_factor=(1., 1.), flip=False, flip_direction=None))
        sample.gt_instances = InstanceData(
            bboxes=torch.tensor([[10., 12., 60., 70.], [64., 20., 120.,
                                                        90.]]),
            labels=torch.tensor([3, 7]))
        samples.append(sample)
    return dict(inputs=inputs, data_samples=samples)


def _favour_class_0(model, num_classes):
    """Untrained softmax scores (about 1 / 81) sit below score_thr: a bias
    of 10 on class 0 of every anchor (SSD) or RoI (Faster R-CNN) gives
    predict boxes to return. Sigmoid heads are left as they are."""
    with torch.no_grad():
        for name, module in model.named_modules():
            if ('cls' in name and isinstance(module, (torch.nn.Conv2d,
                                                      torch.nn.Linear))
                    and module.weight.shape[0] % (num_classes + 1) == 0):
                module.bias[::num_classes + 1] = 10.


# (config, input size, loss names mmdetection logs)
SMALL = [
    ('retinanet/retinanet_r18_fpn_1x_coco.py', (96, 128),
     ['loss_cls', 'loss_bbox']),
    ('rpn/rpn_r50_fpn_1x_coco.py', (96, 128),
     ['loss_rpn_cls', 'loss_rpn_bbox']),
    ('faster_rcnn/faster-rcnn_r50_fpn_1x_coco.py', (96, 128),
     ['loss_rpn_cls', 'loss_rpn_bbox', 'loss_cls', 'acc', 'loss_bbox']),
    ('ssd/ssdlite_mobilenetv2-scratch_8xb24-600e_coco.py', (320, 320),
     ['loss_cls', 'loss_bbox']),
    ('fcos/fcos_r50-caffe_fpn_gn-head_1x_coco.py', (96, 128),
     ['loss_cls', 'loss_bbox', 'loss_centerness']),
    ('atss/atss_r50_fpn_1x_coco.py', (96, 128),
     ['loss_cls', 'loss_bbox', 'loss_centerness']),
    # a dense head as RPN logs 'rpn_' + its keys
    ('faster_rcnn/faster-rcnn_r50_fpn_fcos-rpn_1x_coco.py', (96, 128),
     ['rpn_loss_cls', 'rpn_loss_bbox', 'rpn_loss_centerness', 'loss_cls',
      'acc', 'loss_bbox']),
]


@pytest.mark.parametrize('rel,shape,loss_names', SMALL,
                         ids=[s[0] for s in SMALL])
def test_small_reference_configs_train_and_predict_one_step(
        rel, shape, loss_names):
    path = osp.join(_reference_root(), rel)
    cfg = Config.fromfile(path)
    with DefaultScope.overwrite_default_scope('detkit'):
        model = MODELS.build(cfg.model)
    _favour_class_0(model, 80)
    model.train()
    data = model.data_preprocessor(_batch(shape), True)
    losses = model(**data, mode='loss')
    names = [n for n in losses]
    assert sorted(names) == sorted(loss_names)
    total = sum(v.sum() if isinstance(v, torch.Tensor) else sum(v)
                for k, v in losses.items() if 'loss' in k)
    assert torch.isfinite(total) and total > 0
    total.backward()
    model.eval()
    with torch.no_grad():
        pred = model.test_step(_batch(shape, 1))[0]
    boxes = pred.pred_instances.bboxes
    test_cfg = cfg.model.test_cfg
    max_per_img = (test_cfg.get('rcnn') or test_cfg.get('rpn')
                   or test_cfg).max_per_img
    assert 0 < len(boxes) <= max_per_img
    h, w = shape
    assert boxes[:, 0].min() >= 0 and boxes[:, 1].min() >= 0
    assert boxes[:, 2].max() <= w and boxes[:, 3].max() <= h
