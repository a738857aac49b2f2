"""One training per work_dir: a second one refuses naming the first, a
stale lock is taken over, testing takes no lock."""
import json
import os
import os.path as osp
import runpy
import socket
import subprocess
import sys
import time

import pytest
import torch
from engine_toys import (REPO, start_train, toy_cfg, toy_test_parts,
                         wait_all, write_toy_config)
from mmengine.config import Config

from detkit.engine import DetRunner
from detkit.engine.work_dir_lock import (LOCK_NAME, WorkDirLock,
                                         WorkDirLockedError, _proc_start)

TEST_TOOL = runpy.run_path(osp.join(REPO, 'tools', 'test.py'),
                           run_name='detkit_tools_test_lock')


def _write_lock(work_dir, **owner):
    owner = dict(dict(pid=os.getpid(), host=socket.gethostname(),
                      started='2026-12-04 01:02:03',
                      proc_start=_proc_start(os.getpid()),
                      command='tools/train.py other.py'), **owner)
    os.makedirs(work_dir, exist_ok=True)
    with open(osp.join(work_dir, LOCK_NAME), 'w') as f:
        json.dump(owner, f)
    return owner


def _dead_pid():
    proc = subprocess.Popen([sys.executable, '-c', 'pass'])
    proc.wait()
    return proc.pid


def test_second_training_refuses_while_the_first_runs(tmp_path):
    """Run A trains (slowly) in a subprocess; run B on the same work_dir
    refuses, naming A; A's checkpoints stay A's."""
    ready, hold = tmp_path / 'ready', tmp_path / 'hold'
    hold.touch()  # A waits after its first iteration while this exists
    cfg = write_toy_config(
        tmp_path / 'a.py', max_epochs=1,
        custom_hooks=[dict(type='_SignalAtHook', at=1, ready_file=str(ready),
                           hold_file=str(hold))])
    work_dir = tmp_path / 'work'
    run_a = start_train(cfg, work_dir)
    try:
        while not ready.exists() and run_a.poll() is None:
            time.sleep(0.05)
        runner = DetRunner.from_cfg(Config(toy_cfg(work_dir, max_epochs=1)))
        with pytest.raises(WorkDirLockedError) as info:
            runner.train()
    finally:
        hold.unlink()
    out, = wait_all([run_a])
    assert run_a.returncode == 0, out[-3000:]
    text = str(info.value)
    assert text.startswith(
        f'work_dir {work_dir} is in use by another training: pid '
        f'{run_a.pid} on host {socket.gethostname()!r}, started 20')
    assert text.endswith(
        f'a.py --work-dir {work_dir}). Two runs in one work_dir overwrite '
        "each other's checkpoints. Wait for that run to finish, or give "
        'this one another --work-dir.')
    assert runner.iter == 0  # B never trained
    # A finished and released its lock; epoch_1.pth is A's alone.
    assert not (work_dir / LOCK_NAME).exists()
    assert torch.load(work_dir / 'epoch_1.pth',
                      weights_only=True)['meta']['iter'] == 4


def test_refusal_from_another_host_says_how_to_clear_it(tmp_path):
    owner = _write_lock(tmp_path, host='node-17', pid=1)
    with pytest.raises(WorkDirLockedError) as info:
        WorkDirLock(tmp_path).acquire()
    assert str(info.value).endswith(
        "That run is on another host and cannot be checked from here: if it "
        f'is no longer running, delete {tmp_path / LOCK_NAME}.')
    with open(tmp_path / LOCK_NAME) as f:
        assert json.load(f) == owner  # untouched


@pytest.mark.parametrize('reason', ['dead', 'pid_reused'])
def test_stale_lock_is_reported_and_taken_over(tmp_path, reason):
    if reason == 'dead':
        owner = _write_lock(tmp_path, pid=_dead_pid())
        why = 'is no longer running.'
    else:  # our own pid, but "started" at another time: another process
        owner = _write_lock(tmp_path, proc_start='1')
        why = 'is no longer running (its pid now belongs to another process).'
    said = []
    lock = WorkDirLock(tmp_path, log=said.append).acquire()
    assert said == [
        f'Taking over the stale lock {tmp_path / LOCK_NAME}: it belonged to '
        f'pid {owner["pid"]} on host {socket.gethostname()!r}, started '
        f'2026-12-04 01:02:03 (tools/train.py other.py), which {why}']
    with open(tmp_path / LOCK_NAME) as f:
        assert json.load(f) == lock.owner
    assert lock.owner['pid'] == os.getpid()
    lock.release()
    assert not (tmp_path / LOCK_NAME).exists()


def test_release_leaves_a_lock_that_is_not_ours(tmp_path):
    lock = WorkDirLock(tmp_path).acquire()
    other = _write_lock(tmp_path, host='node-17')  # replaced behind our back
    lock.release()
    with open(tmp_path / LOCK_NAME) as f:
        assert json.load(f) == other


def test_training_after_a_killed_run_takes_its_stale_lock(tmp_path):
    _write_lock(tmp_path, pid=_dead_pid())
    runner = DetRunner.from_cfg(Config(toy_cfg(tmp_path, max_epochs=1)))
    runner.train()
    assert runner.iter == 4
    assert not (tmp_path / LOCK_NAME).exists()


def test_testing_takes_no_lock(tmp_path):
    """tools/test.py on the work_dir of a live training: runs, and leaves
    the training's lock alone."""
    work_dir = tmp_path / 'work'
    owner = _write_lock(work_dir)
    ckpt = tmp_path / 'weights.pth'
    runner = DetRunner.from_cfg(Config(toy_cfg(tmp_path / 'w0')))
    torch.save(dict(state_dict=runner.model.state_dict()), ckpt)
    cfg = dict(toy_cfg(work_dir), **toy_test_parts())
    for key in ('work_dir', 'experiment_name', 'default_scope'):
        cfg.pop(key)
    Config(cfg).dump(str(tmp_path / 'toy.py'))
    metrics = TEST_TOOL['main']([str(tmp_path / 'toy.py'), str(ckpt),
                                 '--work-dir', str(work_dir)])
    assert set(metrics) == {'toy/mean'}
    with open(work_dir / LOCK_NAME) as f:
        assert json.load(f) == owner
