"""DetRunner checkpoints: plain data (weights_only), exact resume."""
import os.path as osp

import numpy as np
import pytest
import torch
from engine_toys import toy_cfg
from mmengine.config import Config

from detkit.engine import DetRunner


def _run(work_dir, **overrides):
    runner = DetRunner.from_cfg(Config(toy_cfg(work_dir, **overrides)))
    runner.train()
    return runner


@pytest.fixture(scope='module')
def runs(tmp_path_factory):
    """An interrupted 2-epoch run (stopped after epoch 1), its resumption,
    and an uninterrupted 2-epoch run."""
    interrupted_dir = tmp_path_factory.mktemp('interrupted')
    first = _run(interrupted_dir,
                 custom_hooks=[dict(type='_StopAfterEpochHook', epoch=1)])
    first_state = dict(
        momentum=[
            first.optim_wrapper.optimizer.state[p]['momentum_buffer'].clone()
            for p in first.model.parameters()
        ],
        loss_history=first.message_hub.get_scalar(
            'train/loss').data[0].copy())
    resumed = _run(interrupted_dir, resume=True,
                   custom_hooks=[dict(type='_RecordResumedStateHook')])
    straight = _run(tmp_path_factory.mktemp('straight'))
    return dict(dir=interrupted_dir, first=first_state, resumed=resumed,
                straight=straight)


def test_checkpoint_is_plain_data(runs):
    path = osp.join(runs['dir'], 'epoch_1.pth')
    ckpt = torch.load(path, weights_only=True)
    assert ckpt['meta']['epoch'] == 1
    assert ckpt['meta']['iter'] == 4  # 8 samples, batch 2
    assert ckpt['meta']['dataset_meta'] == {'classes': ('cat', 'dog')}
    loss = ckpt['message_hub']['log_scalars']['train/loss']
    assert loss['count_history'] == [1, 1, 1, 1]
    assert loss['max_length'] == 1000000
    np.testing.assert_array_equal(loss['log_history'],
                                  runs['first']['loss_history'])
    lr = ckpt['message_hub']['log_scalars']['train/lr']['log_history']
    # LinearLR from 0.1x over 5 steps: 0.1 * (0.1 + 0.9 k / 5), k = 0..3.
    np.testing.assert_allclose(lr, [0.01, 0.028, 0.046, 0.064])
    # After epoch 1: LinearLR step 4 (x0.82), then MultiStepLR x0.1.
    assert ckpt['optimizer']['param_groups'][0]['lr'] == pytest.approx(
        0.0082)
    assert [s['last_step'] for s in ckpt['param_schedulers']] == [4, 1]
    with open(osp.join(runs['dir'], 'last_checkpoint')) as f:
        assert f.read() == osp.join(runs['dir'], 'epoch_2.pth')


def test_resume_restores_loop_optimizer_schedulers_and_history(runs):
    state = next(hook.state for hook in runs['resumed'].hooks
                 if type(hook).__name__ == 'RecordResumedStateHook')
    assert (state['epoch'], state['iter']) == (1, 4)
    assert state['lr'] == pytest.approx(0.0082)
    assert state['scheduler_steps'] == [4, 1]
    for resumed, saved in zip(state['momentum_buffers'],
                              runs['first']['momentum']):
        assert torch.equal(resumed, saved)
    np.testing.assert_array_equal(state['loss_history'],
                                  runs['first']['loss_history'])


def test_resumed_run_equals_uninterrupted_run(runs):
    resumed, straight = runs['resumed'], runs['straight']
    assert (resumed.epoch, resumed.iter) == (2, 8)
    for p, q in zip(resumed.model.parameters(), straight.model.parameters()):
        assert torch.equal(p, q)
    np.testing.assert_array_equal(
        resumed.message_hub.get_scalar('train/loss').data[0],
        straight.message_hub.get_scalar('train/loss').data[0])
    assert resumed.optim_wrapper.get_lr()['lr'] == pytest.approx([0.01])


def test_scheduler_bound_method_is_dropped_and_resume_still_exact(tmp_path):
    # OneCycleLR keeps a bound method (anneal_func) in its state_dict: not
    # plain data. It is left out of the file and rebuilt by the scheduler.
    one_cycle = [dict(type='OneCycleLR', eta_max=0.1, total_steps=8,
                      by_epoch=False)]
    _run(tmp_path / 'a', param_scheduler=one_cycle,
         custom_hooks=[dict(type='_StopAfterEpochHook', epoch=1)])
    state = torch.load(tmp_path / 'a' / 'epoch_1.pth',
                       weights_only=True)['param_schedulers'][0]
    assert 'anneal_func' not in state and state['last_step'] == 4
    resumed = _run(tmp_path / 'a', param_scheduler=one_cycle, resume=True)
    straight = _run(tmp_path / 'b', param_scheduler=one_cycle)
    for p, q in zip(resumed.model.parameters(), straight.model.parameters()):
        assert torch.equal(p, q)
    assert resumed.optim_wrapper.get_lr() == straight.optim_wrapper.get_lr()
