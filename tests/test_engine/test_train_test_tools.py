"""tools/train.py and tools/test.py: flags, errors, end to end in-process."""
import argparse
import os.path as osp
import runpy

import mmengine
import pytest
import torch
from engine_toys import toy_cfg, toy_test_parts
from mmengine.config import Config

from conftest import REPO_ROOT
from detkit.engine.launch import (apply_train_args, enable_visualization,
                                  load_config)

TRAIN = runpy.run_path(osp.join(REPO_ROOT, 'tools', 'train.py'),
                       run_name='detkit_tools_train')
TEST = runpy.run_path(osp.join(REPO_ROOT, 'tools', 'test.py'),
                      run_name='detkit_tools_test')


def _write_cfg(path, **overrides):
    cfg = dict(toy_cfg(path.parent / 'from_cfg', **overrides),
               **toy_test_parts())
    cfg.pop('default_scope')  # the tools must add it
    cfg.pop('work_dir')
    # Runs in one process within one second would share a MessageHub
    # (mmengine keys it by <config name>_<timestamp>): name each run.
    cfg.pop('experiment_name')
    Config(cfg).dump(str(path))
    return str(path)


def _train_args(*argv):
    return TRAIN['parse_args'](['cfg.py', *argv])[1]


def test_train_flags_change_the_config(tmp_path):
    cfg_file = _write_cfg(tmp_path / 'toy_faster.py',
                          auto_scale_lr=dict(enable=False, base_batch_size=4))
    args = _train_args('--amp', '--auto-scale-lr', '--resume',
                       '--cfg-options', 'train_cfg.max_epochs=5',
                       'optim_wrapper.optimizer.lr=0.5')
    cfg = apply_train_args(load_config(cfg_file, args), args)
    assert cfg.default_scope == 'detkit'
    assert cfg.launcher == 'none'
    assert cfg.work_dir == osp.join('./work_dirs', 'toy_faster')
    assert cfg.train_cfg.max_epochs == 5
    assert cfg.optim_wrapper.optimizer.lr == 0.5
    assert cfg.optim_wrapper.type == 'AmpOptimWrapper'
    assert cfg.optim_wrapper.loss_scale == 'dynamic'
    assert cfg.auto_scale_lr.enable is True
    assert (cfg.resume, cfg.load_from) == (True, None)  # auto-find
    ckpt = tmp_path / 'epoch_3.pth'
    ckpt.write_bytes(b'')
    args = _train_args('--resume', str(ckpt), '--work-dir', 'w')
    cfg = apply_train_args(load_config(cfg_file, args), args)
    assert (cfg.resume, cfg.load_from, cfg.work_dir) == (True, str(ckpt),
                                                         'w')
    args = _train_args('--auto-scale-lr')
    cfg = load_config(_write_cfg(tmp_path / 'no_scale.py'), args)
    with pytest.raises(RuntimeError, match='base_batch_size'):
        apply_train_args(cfg, args)


def test_missing_files_give_clear_errors(tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_info:
        TRAIN['main']([str(tmp_path / 'nope.py')])
    assert exit_info.value.code == 2
    assert 'nope.py' in capsys.readouterr().err
    cfg_file = _write_cfg(tmp_path / 'toy.py')
    with pytest.raises(SystemExit):
        TEST['main']([cfg_file, str(tmp_path / 'missing.pth')])
    assert "Checkpoint file '" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        TRAIN['main']([cfg_file, '--resume', str(tmp_path / 'gone.pth')])
    assert 'gone.pth' in capsys.readouterr().err


def test_show_dir_enables_visualization_hook():
    cfg = Config(dict(default_hooks=dict(
        visualization=dict(type='DetVisualizationHook'))))
    enable_visualization(cfg, show=True, show_dir='vis', wait_time=0.5)
    assert cfg.default_hooks.visualization == dict(
        type='DetVisualizationHook', draw=True, show=True, wait_time=0.5,
        test_out_dir='vis')
    with pytest.raises(RuntimeError, match='DetVisualizationHook'):
        enable_visualization(Config(dict(default_hooks=dict())),
                             show_dir='vis')


def test_train_resume_then_test_with_dump(tmp_path):
    cfg_file = _write_cfg(tmp_path / 'toy.py')
    work_dir = str(tmp_path / 'work')
    common = ['--work-dir', work_dir, '--cfg-options']
    TRAIN['main']([cfg_file, *common, 'train_cfg.max_epochs=1',
                   'experiment_name=first'])
    TRAIN['main']([cfg_file, '--resume', *common, 'train_cfg.max_epochs=2',
                   'experiment_name=resumed'])
    ckpt = torch.load(osp.join(work_dir, 'epoch_2.pth'), weights_only=True)
    assert (ckpt['meta']['epoch'], ckpt['meta']['iter']) == (2, 8)
    assert len(ckpt['message_hub']['log_scalars']['train/loss']
               ['log_history']) == 8  # 4 resumed + 4 new

    # A checkpoint with known weights: every prediction is the bias.
    ckpt['state_dict']['linear.weight'].zero_()
    ckpt['state_dict']['linear.bias'].copy_(torch.tensor([1., 2.]))
    known = str(tmp_path / 'known.pth')
    torch.save(ckpt, known)
    out = str(tmp_path / 'preds.pkl')
    metrics = TEST['main']([cfg_file, known, '--work-dir', work_dir,
                            '--out', out, '--cfg-options',
                            'experiment_name=test'])
    assert metrics == {'toy/mean': 1.5}
    preds = mmengine.load(out)
    assert len(preds) == 8
    assert all(torch.equal(p['pred'], torch.tensor([1., 2.])) for p in preds)


def test_parse_local_rank_spellings():
    for flag in ('--local_rank', '--local-rank'):
        args = _train_args(flag, '3')
        assert isinstance(args, argparse.Namespace) and args.local_rank == 3
