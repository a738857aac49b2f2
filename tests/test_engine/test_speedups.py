"""detkit.engine.speedups: the foreach optimizer step is bitwise the
per-parameter loop's update; DetRunner trains and tests channels-last by
default from the same initial weights as NCHW, and ``channels_last=False``
keeps NCHW."""
import os.path as osp
import sys

import pytest
import torch
import torch.nn as nn
from mmengine.config import Config

from detkit.engine import (DetRunner, channels_last_enabled,
                           foreach_optim_wrapper_cfg, set_memory_format)

sys.path.insert(0, osp.join(osp.dirname(osp.dirname(osp.abspath(__file__))),
                            'test_tools'))
from toolbox_toys import tiny_setup  # noqa: E402,F401


def test_foreach_is_set_only_where_the_config_leaves_it_open():
    cfg = dict(type='OptimWrapper', clip_grad=None,
               optimizer=dict(type='SGD', lr=0.01, momentum=0.9))
    out = foreach_optim_wrapper_cfg(cfg)
    assert out['optimizer'] == dict(type='SGD', lr=0.01, momentum=0.9,
                                    foreach=True)
    assert out['clip_grad'] is None and 'foreach' not in cfg['optimizer']
    for own in (dict(foreach=False), dict(fused=True)):
        kept = dict(optimizer=dict(type='AdamW', lr=1e-3, **own))
        assert foreach_optim_wrapper_cfg(kept) is kept
    assert foreach_optim_wrapper_cfg(dict(
        optimizer=dict(type=torch.optim.Adam, lr=1e-3)))['optimizer'][
            'foreach'] is True
    # LBFGS takes no foreach; a built wrapper or a dict of wrappers pass.
    lbfgs = dict(optimizer=dict(type='LBFGS', lr=1))
    assert foreach_optim_wrapper_cfg(lbfgs) is lbfgs
    many = dict(backbone=dict(optimizer=dict(type='SGD', lr=0.1)))
    assert foreach_optim_wrapper_cfg(many) is many


@pytest.mark.parametrize('name,kwargs', [
    ('SGD', dict(lr=0.02, momentum=0.9, weight_decay=1e-4)),
    ('AdamW', dict(lr=1e-3, weight_decay=0.05)),
])
def test_foreach_step_is_bitwise_the_loop(name, kwargs):
    gen = torch.Generator().manual_seed(0)
    shapes = [(16, 8, 3, 3), (16, ), (5, 7)]
    start = [torch.randn(s, generator=gen) for s in shapes]
    start[0] = start[0].contiguous(memory_format=torch.channels_last)
    grads = [[torch.randn(s, generator=gen) for s in shapes]
             for _ in range(4)]
    results = []
    for foreach in (False, True):
        params = [nn.Parameter(p.clone()) for p in start]
        opt = getattr(torch.optim, name)(params, foreach=foreach, **kwargs)
        for step in grads:
            for p, g in zip(params, step):
                p.grad = g.clone()
            opt.step()
        results.append(params)
    for a, b, first in zip(*results, start):
        assert torch.equal(a, b)
        assert not torch.equal(a, first)  # the steps did move them


def test_channels_last_key_and_memory_format():
    assert channels_last_enabled(Config(dict())) is True
    assert channels_last_enabled(Config(dict(channels_last=False))) is False
    with pytest.raises(TypeError, match="channels_last='yes'"):
        channels_last_enabled(Config(dict(channels_last='yes')))
    conv = nn.Conv2d(4, 8, 3)
    weight = conv.weight
    set_memory_format(conv)
    assert conv.weight is weight  # the same Parameter (optimizers keep it)
    assert weight.is_contiguous(memory_format=torch.channels_last)
    assert not weight.is_contiguous()
    set_memory_format(conv, channels_last=False)
    assert weight.is_contiguous()


def _runner(setup, tmp_path, name, **extra):
    cfg = Config(setup['cfg'])
    cfg.work_dir = str(tmp_path / name)
    cfg.train_cfg = dict(type='EpochBasedTrainLoop', max_epochs=1)
    cfg.val_cfg = cfg.val_dataloader = cfg.val_evaluator = None
    cfg.default_hooks = dict(checkpoint=None)
    cfg.randomness = dict(seed=3)
    cfg.merge_from_dict(extra)
    return DetRunner.from_cfg(cfg)


def test_runner_trains_channels_last_from_the_nchw_initial_weights(
        tiny_setup, tmp_path, monkeypatch):  # noqa: F811
    """The first training step of both layouts starts from equal weights
    (initialised in NCHW), the model and its 3x3 conv weights stay
    channels-last, and the optimizer was built with foreach=True."""
    seen = {}
    for name, channels_last in (('cl', True), ('nchw', False)):
        runner = _runner(tiny_setup, tmp_path, name,
                         channels_last=channels_last)
        model = runner.model
        real = model.train_step

        def first_step(data, optim_wrapper, real=real, name=name,
                       model=model):
            if name not in seen:
                seen[name] = dict(
                    weights={k: v.clone()
                             for k, v in model.state_dict().items()},
                    foreach=optim_wrapper.optimizer.defaults['foreach'],
                    cl=model.backbone.conv1.weight.is_contiguous(
                        memory_format=torch.channels_last))
            return real(data, optim_wrapper)

        monkeypatch.setattr(model, 'train_step', first_step)
        runner.train()
        seen[name]['after'] = model.backbone.conv1.weight.is_contiguous(
            memory_format=torch.channels_last)
    assert seen['cl']['cl'] and seen['cl']['after']
    assert not seen['nchw']['cl'] and not seen['nchw']['after']
    assert seen['cl']['foreach'] is True and seen['nchw']['foreach'] is True
    for key, value in seen['nchw']['weights'].items():
        assert torch.equal(seen['cl']['weights'][key], value), key
