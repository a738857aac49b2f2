"""The run lifecycle with 2 CPU processes (tools/dist_train.sh, gloo):
SIGKILL inside an epoch and SIGTERM (on one rank only, or to torchrun,
which forwards it) end in a checkpoint --resume continues from bitwise; a
locked work_dir stops every rank; the end of a run joins gloo's threads.

The toy config of engine_toys: 8 samples, batch 2 per process, so 2
iterations per epoch, 3 epochs.
"""
import gc
import os
import signal
import time

import torch
import torch.distributed as torch_dist
from engine_toys import (EngineToyModel, assert_same_state, logged_scalars,
                         write_toy_config)
from test_dist_common import finish, free_port, start_script

from detkit.engine.dist import shutdown_process_group
from detkit.engine.work_dir_lock import LOCK_NAME, WorkDirLock

TIMEOUT = 240
ITER_CHECKPOINTS = dict(default_hooks=dict(
    checkpoint=dict(type='CheckpointHook', interval=3, by_epoch=False),
    logger=dict(type='LoggerHook', interval=1)))


def _train(cfg, work_dir, *args):
    return start_script('dist_train.sh', cfg, 2, '--work-dir', work_dir,
                        *args, cwd=work_dir.parent, PORT=free_port())


def test_two_processes_interrupted_and_resumed(tmp_path):
    plain = write_toy_config(tmp_path / 'toy.py')
    iter_ckpt = write_toy_config(tmp_path / 'toy_iter.py',
                                 **ITER_CHECKPOINTS)
    killed = write_toy_config(
        tmp_path / 'killed.py', **ITER_CHECKPOINTS,
        custom_hooks=[dict(type='_KillAtHook', point='train_iter', at=5)])
    # SIGTERM reaches rank 1 only: both ranks must stop after iteration 3.
    one_rank = write_toy_config(
        tmp_path / 'one_rank.py',
        custom_hooks=[dict(type='_SignalAtHook', signal='SIGTERM', at=3,
                           rank=1)])
    # Slow iterations from iteration 2 on, time for a SIGTERM to torchrun.
    ready = tmp_path / 'ready'
    slow = write_toy_config(
        tmp_path / 'slow.py',
        custom_hooks=[dict(type='_SignalAtHook', at=2, sleep=0.5,
                           ready_file=str(ready))])
    dirs = {name: tmp_path / name for name in
            ('straight', 'killed', 'one_rank', 'torchrun', 'locked')}
    for path in dirs.values():
        path.mkdir()
    # A live process (this one) holds the lock of 'locked'.
    lock = WorkDirLock(dirs['locked']).acquire()
    try:
        procs = [_train(plain, dirs['straight']),
                 _train(killed, dirs['killed']),
                 _train(one_rank, dirs['one_rank']),
                 _train(plain, dirs['locked'])]
        torchrun = _train(slow, dirs['torchrun'])
        deadline = time.monotonic() + TIMEOUT
        while not ready.exists() and torchrun.poll() is None and \
                time.monotonic() < deadline:
            time.sleep(0.1)
        torchrun.send_signal(signal.SIGTERM)
        outs = dict(zip(['straight', 'killed', 'one_rank', 'locked',
                         'torchrun'], finish(procs + [torchrun], TIMEOUT)))
    finally:
        lock.release()
    codes = dict(zip(outs, [p.returncode for p in procs + [torchrun]]))
    assert codes['straight'] == 0, outs['straight'][-3000:]
    for name in ('killed', 'one_rank', 'locked', 'torchrun'):
        assert codes[name] != 0 and '[killed after the' not in outs[name], (
            name, outs[name][-3000:])

    # Only rank 0 takes the lock (the straight run would refuse itself
    # otherwise); a live lock stops both ranks, each saying who holds it.
    assert outs['locked'].count(
        f'work_dir {dirs["locked"]} is in use by another training: pid '
        f'{os.getpid()} on host') == 2
    assert not list(dirs['locked'].glob('*.pth'))

    # Rank 1 alone got SIGTERM; both stopped after iteration 3 and exited
    # with 143 (no rank was killed), rank 0 wrote the checkpoint. torchrun
    # lists the ranks that had exited when it noticed the first failure:
    # one or both, depending on which of them ended first.
    one_rank_ckpt = dirs['one_rank'] / 'interrupted_iter_3.pth'
    assert (f'Interrupted by SIGTERM after iteration 3 (epoch 2, 1/2): saved '
            f'{one_rank_ckpt} in ') in outs['one_rank']
    assert outs['one_rank'].count('exitcode  : 143') in (1, 2)
    assert 'exitcode  : -' not in outs['one_rank']
    meta = torch.load(one_rank_ckpt, weights_only=True)['meta']
    assert (meta['epoch'], meta['iter']) == (1, 3)

    # torchrun forwarded SIGTERM to both ranks; they agreed on an
    # iteration, rank 0 saved it, neither was killed.
    saved = list(dirs['torchrun'].glob('interrupted_iter_*.pth'))
    assert len(saved) == 1, outs['torchrun'][-3000:]
    done = int(saved[0].stem.split('_')[-1])
    assert 2 <= done < 6
    assert f'Interrupted by SIGTERM after iteration {done} ' in \
        outs['torchrun']
    assert 'exitcode  : -' not in outs['torchrun']
    assert torch.load(saved[0], weights_only=True)['meta']['iter'] == done

    # Both resumed with 2 processes end bitwise equal to the straight run.
    resumes = [_train(iter_ckpt, dirs['killed'], '--resume'),
               _train(plain, dirs['one_rank'], '--resume')]
    for proc, out in zip(resumes, finish(resumes, TIMEOUT)):
        assert proc.returncode == 0, out[-3000:]
    assert_same_state(dirs['straight'] / 'epoch_3.pth',
                      dirs['killed'] / 'iter_6.pth')
    assert_same_state(dirs['straight'] / 'epoch_3.pth',
                      dirs['one_rank'] / 'epoch_3.pth')
    (expected, ) = logged_scalars(dirs['straight'])
    for name, start in (('killed', (2, 4)), ('one_rank', (2, 4))):
        _, resumed = logged_scalars(dirs[name])
        assert (resumed[0]['epoch'], resumed[0]['iter']) == start
        assert resumed == expected[expected.index(resumed[0]):]


def _threads():
    return len(os.listdir('/proc/self/task'))


def test_shutdown_joins_gloo_threads_only_without_the_ddp_wrapper():
    """Why the runner's DDP wrapper is dropped before
    destroy_process_group: while it holds the group, gloo's threads keep
    running into interpreter shutdown (where they aborted the process)."""
    model = EngineToyModel()
    model(torch.randn(2, 4)).sum().backward()  # start torch's own threads
    baseline = _threads()

    class Runner:
        pass

    for drop_wrapper in (False, True):
        torch_dist.init_process_group('gloo', store=torch_dist.HashStore(),
                                      rank=0, world_size=1)
        runner = Runner()
        runner.model = torch.nn.parallel.DistributedDataParallel(model)
        runner.model(torch.randn(2, 4)).sum().backward()
        assert _threads() > baseline
        if drop_wrapper:
            shutdown_process_group(runner)
            assert runner.model is model
        else:
            torch_dist.barrier()
            torch_dist.destroy_process_group()
            assert _threads() > baseline  # the wrapper keeps them alive
            del runner
            gc.collect()
        assert not torch_dist.is_initialized()
        assert _threads() == baseline


def test_lock_file_lives_in_the_work_dir(tmp_path):
    lock = WorkDirLock(tmp_path).acquire()
    assert (tmp_path / LOCK_NAME).is_file()
    lock.release()
    assert not (tmp_path / LOCK_NAME).exists()
