"""DetRunner checkpoints: plain data (weights_only), exact resume, also
of runs killed at every boundary."""
import os
import os.path as osp
import signal

import numpy as np
import pytest
import torch
from engine_toys import (assert_same_state, logged_scalars, start_train,
                         straight_toy_run_once, toy_cfg, wait_all,
                         write_toy_config)
from mmengine.config import Config

from detkit.engine import DetRunner


def _run(work_dir, **overrides):
    runner = DetRunner.from_cfg(Config(toy_cfg(work_dir, **overrides)))
    runner.train()
    return runner


@pytest.fixture(scope='session')
def straight_toy_run(tmp_path_factory):
    return straight_toy_run_once(tmp_path_factory)


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


# ------------------------------------------------ killed at every boundary
# tools/train.py in subprocesses on the toy config (3 epochs of 4
# iterations, validation after each): an uninterrupted run, and runs
# SIGKILLed at four points (engine_toys.KillAtHook) then resumed with
# --resume. Each resumed run must end bitwise equal to the uninterrupted
# one, and its log (scalars.json: loss, lr, validation metrics) must be the
# uninterrupted log from the checkpoint on.
ITER_CHECKPOINTS = dict(default_hooks=dict(
    checkpoint=dict(type='CheckpointHook', interval=3, by_epoch=False),
    logger=dict(type='LoggerHook', interval=1)))
KILL_CASES = {
    # case: (kill point, count, config overrides)
    'mid_epoch': ('train_iter', 8, ITER_CHECKPOINTS),
    'before_pointer': ('pointer', 2, {}),
    'during_write': ('write', 2, {}),
    'during_validation': ('val_iter', 2, {}),
}


@pytest.fixture(scope='module')
def killed_runs(tmp_path_factory, straight_toy_run):
    root = tmp_path_factory.mktemp('killed')
    plain = write_toy_config(root / 'toy.py')
    iter_ckpt = write_toy_config(root / 'toy_iter.py', **ITER_CHECKPOINTS)
    procs, cases = [], {}
    for case, (point, at, overrides) in KILL_CASES.items():
        killed = write_toy_config(
            root / f'{case}.py', **overrides,
            custom_hooks=[dict(type='_KillAtHook', point=point, at=at)])
        cases[case] = dict(dir=root / case,
                           cfg=iter_ckpt if overrides else plain)
        procs.append(start_train(killed, root / case))
    outs = wait_all(procs)
    for (case, info), proc, out in zip(cases.items(), procs, outs):
        assert proc.returncode == -signal.SIGKILL, (case, out[-3000:])
        info['killed_files'] = sorted(os.listdir(info['dir']))
    resumes = [start_train(info['cfg'], info['dir'], '--resume')
               for info in cases.values()]
    for info, proc, out in zip(cases.values(), resumes, wait_all(resumes)):
        assert proc.returncode == 0, out[-3000:]
        info['out'] = out
    return dict(straight=straight_toy_run, cases=cases)


def _final_checkpoint(work_dir):
    with open(osp.join(work_dir, 'last_checkpoint')) as f:
        return f.read().strip()


@pytest.mark.parametrize('case', list(KILL_CASES))
def test_killed_run_resumes_bitwise_and_its_log_continues(killed_runs,
                                                          case):
    info = killed_runs['cases'][case]
    straight = killed_runs['straight']
    last = _final_checkpoint(info['dir'])
    assert osp.basename(last) == ('iter_12.pth' if case == 'mid_epoch' else
                                  'epoch_3.pth')
    assert_same_state(straight / 'epoch_3.pth', last)
    (expected, ), (killed, resumed) = (logged_scalars(straight),
                                       logged_scalars(info['dir']))
    assert len(expected) == 12 + 3  # 12 iterations, 3 validations
    # The resumed log starts where the checkpoint was taken and is the
    # uninterrupted log from there: same losses (smoothed over the restored
    # history), learning rates, steps and validation results.
    start = expected.index(resumed[0])
    assert killed[:start] == expected[:start]
    assert resumed == expected[start:]
    lrs = [line['lr'] for line in expected if 'lr' in line]
    assert lrs[:4] == pytest.approx([0.01, 0.028, 0.046, 0.064])
    assert lrs[6:] == pytest.approx([0.01] * 6)  # warm-up over, x0.1 at 1
    # Where each resume started, and what it said.
    first = resumed[0]
    out = info['out']
    if case == 'mid_epoch':
        # Killed after iteration 8: iter_6.pth (epoch 2, 2 of 4 batches).
        assert (first['epoch'], first['iter']) == (2, 7)
    elif case == 'before_pointer':
        assert info['killed_files'].count('epoch_2.pth') == 1
        assert (f"epoch_2.pth was written after {info['dir']}/epoch_1.pth, "
                'the checkpoint') in out
        assert 'resuming from' in out and 'Resumed at the end of epoch 2' \
            in out
        assert first == {'toy/mean': first['toy/mean'], 'step': 2}
    elif case == 'during_write':
        # Half a checkpoint in a temporary file; epoch_2.pth never existed.
        tmp = [n for n in info['killed_files'] if n.endswith('.tmp')]
        assert len(tmp) == 1 and tmp[0].startswith('.epoch_2.pth.')
        assert 'epoch_2.pth' not in info['killed_files']
        assert (f'Removed 1 temporary file(s) in {info["dir"]} left by an '
                f'interrupted checkpoint write: {tmp[0]} (') in out
        assert not [n for n in os.listdir(info['dir']) if n.endswith('.tmp')]
        # epoch_1.pth was saved before epoch 1's validation: it runs again.
        assert 'Resumed at the end of epoch 1' in out
        assert first == {'toy/mean': first['toy/mean'], 'step': 1}
    else:
        assert 'Resumed at the end of epoch 2' in out
        assert first == {'toy/mean': first['toy/mean'], 'step': 2}


def test_iteration_based_training_resumes_exactly(tmp_path):
    """by_epoch=False (DetIterBasedTrainLoop): stopped after 4 of 8
    iterations, resumed, equal to 8 straight (the main process is reseeded
    per iteration, the data stream replayed)."""
    common = dict(
        train_dataloader=dict(
            batch_size=2, num_workers=0,
            dataset=dict(type='_EngineToyDataset', size=8),
            sampler=dict(type='InfiniteSampler', shuffle=True, seed=0),
            collate_fn=dict(type='default_collate')),
        param_scheduler=[dict(type='LinearLR', start_factor=0.1,
                              by_epoch=False, begin=0, end=6)],
        default_hooks=dict(checkpoint=dict(type='CheckpointHook',
                                           interval=4, by_epoch=False)))
    first = _run(tmp_path / 'a', train_cfg=dict(by_epoch=False, max_iters=4),
                 **common)
    assert type(first.train_loop).__name__ == 'DetIterBasedTrainLoop'
    resumed = _run(tmp_path / 'a', resume=True,
                   train_cfg=dict(by_epoch=False, max_iters=8), **common)
    straight = _run(tmp_path / 'b',
                    train_cfg=dict(by_epoch=False, max_iters=8), **common)
    assert resumed.iter == straight.iter == 8
    for p, q in zip(resumed.model.parameters(), straight.model.parameters()):
        assert torch.equal(p, q)
    np.testing.assert_array_equal(
        resumed.message_hub.get_scalar('train/loss').data[0],
        straight.message_hub.get_scalar('train/loss').data[0])
