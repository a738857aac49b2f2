"""A malicious checkpoint never runs its payload, whichever way a user
loads it: ``init_detector``, ``tools/test.py CHECKPOINT``,
``tools/train.py --resume CHECKPOINT``, the model converters (the library
paths, load_from, auto-resume, mmengine's loaders and URLs are covered in
tests/test_engine/test_safe_loading.py); and no code in detkit, tools or
demo unpickles a file any other way."""
import ast
import collections
import glob
import os
import os.path as osp
import runpy

import pytest
import torch
from mmengine.config import Config
from mmengine.registry import DefaultScope
from reliability_toys import (REPO_ROOT, TEST_TOOL, TRAIN_TOOL, ToyModel,
                              tiny_cfg, toy_runner_cfg)
from reliability_toys import one_thread  # noqa: F401 (a fixture)

from detkit.apis import init_detector
from detkit.engine import NeutralisedObjectsWarning
from detkit.registry import MODELS

pytestmark = pytest.mark.usefixtures('one_thread')
TRAIN = runpy.run_path(TRAIN_TOOL, run_name='detkit_tools_train')
TEST = runpy.run_path(TEST_TOOL, run_name='detkit_tools_test')


class Payload:
    """Unpickles as ``os.system('touch MARKER')``."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return os.system, (f'touch {self.marker}', )


def _evil(path, state_dict, marker, **extra):
    """A checkpoint whose meta, message hub and schedulers carry payloads
    beside good weights."""
    ckpt = dict(
        meta=dict(epoch=1, iter=4, seed=0, evil=Payload(marker)),
        state_dict=state_dict,
        message_hub=dict(log_scalars={'train/loss': Payload(marker)},
                         runtime_info=dict(evil=Payload(marker)),
                         resumed_keys={}),
        **extra)
    torch.save(ckpt, path)
    return str(path)


def test_init_detector(tmp_path):
    marker = tmp_path / 'ran'
    cfg = tiny_cfg(str(tmp_path), tmp_path / 'work')
    with DefaultScope.overwrite_default_scope('detkit'):
        model = MODELS.build(cfg.model)
    state = model.state_dict()
    state['bbox_head.retina_cls.bias'] = torch.full_like(
        state['bbox_head.retina_cls.bias'], 1.25)
    path = _evil(tmp_path / 'evil.pth', state, marker)
    with pytest.warns(NeutralisedObjectsWarning, match='posix.system'):
        detector = init_detector(cfg, path)
    assert not marker.exists()
    assert torch.equal(detector.bbox_head.retina_cls.bias,
                       torch.full((9 * 5, ), 1.25))
    assert detector.dataset_meta['classes'][0] == 'circle'


def _toy_weights():
    state = ToyModel().state_dict()
    state['linear.weight'] = torch.zeros(2, 4)
    state['linear.bias'] = torch.tensor([1., 2.])
    return state


def _toy_cfg_file(tmp_path):
    cfg = Config(toy_runner_cfg(tmp_path / 'work'))
    cfg.pop('experiment_name')
    path = str(tmp_path / 'toy.py')
    cfg.dump(path)
    return path


def test_tools_test_with_a_malicious_checkpoint(tmp_path):
    marker = tmp_path / 'ran'
    path = _evil(tmp_path / 'evil.pth', _toy_weights(), marker)
    with pytest.warns(NeutralisedObjectsWarning):
        metrics = TEST['main']([_toy_cfg_file(tmp_path), path,
                                '--cfg-options', 'experiment_name=evil_t'])
    assert not marker.exists()
    assert metrics == {'toy/mean': 1.5}  # zero weights, bias (1, 2)


def test_tools_train_resume_from_a_malicious_checkpoint(tmp_path):
    marker = tmp_path / 'ran'
    optimizer = dict(state={}, param_groups=[dict(
        lr=0.1, momentum=0.9, dampening=0, weight_decay=0, nesterov=False,
        maximize=False, foreach=None, differentiable=False, fused=None,
        params=[0, 1])])
    path = _evil(tmp_path / 'evil.pth', _toy_weights(), marker,
                 optimizer=optimizer,
                 param_schedulers=[dict(evil=Payload(marker))])
    work_dir = tmp_path / 'work'
    with pytest.warns(NeutralisedObjectsWarning):
        TRAIN['main']([_toy_cfg_file(tmp_path), '--resume', path,
                       '--cfg-options', 'experiment_name=evil_r'])
    assert not marker.exists()
    ckpt = torch.load(work_dir / 'epoch_2.pth', weights_only=True)
    assert (ckpt['meta']['epoch'], ckpt['meta']['iter']) == (2, 8)
    # Epoch 2 trained from the file's weights: 4 SGD steps from bias (1, 2)
    # towards targets of mean about 0.
    bias = ckpt['state_dict']['linear.bias']
    assert bias.abs().max() < 2 and not torch.equal(
        bias, torch.tensor([1., 2.]))


def test_model_converters_with_a_malicious_checkpoint(tmp_path):
    marker = tmp_path / 'ran'
    convert = runpy.run_path(
        osp.join(REPO_ROOT, 'tools', 'model_converters',
                 'torchvision2detkit.py'), run_name='detkit_converter')
    weights = collections.OrderedDict([
        ('conv1.weight', torch.full((2, 3, 1, 1), 0.5)),
        ('layer1.0.conv1.weight', torch.ones(2, 2, 1, 1)),
        ('fc.weight', torch.ones(1, 2))])
    src = _evil(tmp_path / 'resnet_zoo.pth', weights, marker)
    with pytest.warns(NeutralisedObjectsWarning):
        converted = convert['main']([src, str(tmp_path / 'out.pth')])
    assert not marker.exists()
    assert list(converted) == ['conv1.weight', 'layer1.0.conv1.weight']
    assert torch.equal(
        torch.load(tmp_path / 'out.pth', weights_only=True)['state_dict']
        ['conv1.weight'], weights['conv1.weight'])

    checker = runpy.run_path(
        osp.join(REPO_ROOT, 'tools', 'model_converters',
                 'check_mmdet_checkpoint.py'), run_name='detkit_checker')
    cfg = tiny_cfg(str(tmp_path), tmp_path / 'work')
    with DefaultScope.overwrite_default_scope('detkit'):
        state = MODELS.build(cfg.model).state_dict()
    cfg_file = str(tmp_path / 'tiny.py')
    cfg.dump(cfg_file)
    path = _evil(tmp_path / 'evil.pth', state, marker)
    with pytest.warns(NeutralisedObjectsWarning):
        report = checker['main']([cfg_file, path])
    assert not marker.exists()
    assert not report and report.missing == report.unexpected == []


# Calls that unpickle: allowed only in the restricted loader.
_UNSAFE = {('pickle', 'load'), ('pickle', 'loads'), ('dill', 'load'),
           ('hub', 'load_state_dict_from_url')}


def _unsafe_calls(source):
    found = []
    for node in ast.walk(ast.parse(source)):
        if not isinstance(node, ast.Call) or not isinstance(
                node.func, ast.Attribute):
            continue
        owner = node.func.value
        owner = getattr(owner, 'id', getattr(owner, 'attr', None))
        name = node.func.attr
        keywords = {k.arg: k.value for k in node.keywords}
        if (owner, name) in _UNSAFE:
            found.append(f'{owner}.{name}')
        elif (owner, name) == ('torch', 'load'):
            weights_only = keywords.get('weights_only')
            if not (isinstance(weights_only, ast.Constant)
                    and weights_only.value is True):
                found.append('torch.load without weights_only=True')
    return found


def test_no_unsafe_unpickling_in_the_code():
    files = [
        f for folder in ('detkit', 'tools', 'demo')
        for f in glob.glob(osp.join(REPO_ROOT, folder, '**', '*.py'),
                           recursive=True)
    ]
    assert len(files) > 50
    offenders = collections.defaultdict(list)
    for path in files:
        with open(path) as f:
            for call in _unsafe_calls(f.read()):
                offenders[osp.relpath(path, REPO_ROOT)].append(call)
    # The one deliberate exception: torch.load through the restricted
    # pickle module, after weights_only refused the file.
    assert offenders.pop('detkit/engine/checkpoint.py') == [
        'torch.load without weights_only=True'
    ]
    assert dict(offenders) == {}
    # The scanner itself finds what it looks for.
    assert _unsafe_calls('import pickle\npickle.loads(b)\n'
                         'torch.load(p)\ntorch.load(p, weights_only=False)\n'
                         'torch.load(p, weights_only=True)\n') == [
        'pickle.loads', 'torch.load without weights_only=True',
        'torch.load without weights_only=True']
