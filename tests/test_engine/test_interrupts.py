"""Ctrl-C (SIGINT) and SIGTERM during training: a checkpoint of the current
iteration, where it is, a non-zero exit; --resume continues exactly."""
import os.path as osp
import signal
import subprocess
import sys
import time

import pytest
import torch
from engine_toys import (assert_same_state, logged_scalars, start_train,
                         straight_toy_run_once, toy_cfg, wait_all,
                         write_toy_config)
from mmengine.config import Config
from mmengine.hooks import Hook

from detkit.engine import DetRunner
from detkit.engine.interrupts import DUPLICATE_WINDOW, SignalRecorder

SIGNALS = {'SIGINT': 130, 'SIGTERM': 143}


@pytest.fixture(scope='session')
def straight_toy_run(tmp_path_factory):
    return straight_toy_run_once(tmp_path_factory)


@pytest.fixture(scope='module')
def interrupted_runs(tmp_path_factory):
    """For each signal: a run that receives it after iteration 6 (epoch 2,
    batch 2 of 4), then ``--resume``."""
    root = tmp_path_factory.mktemp('interrupted')
    plain = write_toy_config(root / 'toy.py')
    runs, procs = {}, []
    for name in SIGNALS:
        cfg = write_toy_config(
            root / f'{name}.py',
            custom_hooks=[dict(type='_SignalAtHook', signal=name, at=6)])
        runs[name] = dict(dir=root / name)
        procs.append(start_train(cfg, root / name))
    for run, proc, out in zip(runs.values(), procs, wait_all(procs)):
        run.update(returncode=proc.returncode, out=out,
                   pointer=(run['dir'] / 'last_checkpoint').read_text())
    resumes = [start_train(plain, run['dir'], '--resume')
               for run in runs.values()]
    for run, proc, out in zip(runs.values(), resumes, wait_all(resumes)):
        assert proc.returncode == 0, out[-3000:]
    return runs


@pytest.mark.parametrize('name', list(SIGNALS))
def test_signal_saves_current_iteration_and_exits_non_zero(
        interrupted_runs, name):
    run = interrupted_runs[name]
    work_dir = run['dir']
    assert run['returncode'] == SIGNALS[name], run['out'][-3000:]
    path = work_dir / 'interrupted_iter_6.pth'
    assert (f'{name} received: training stops after this iteration and '
            'saves a checkpoint (again, after 2 s, to stop at once without '
            'one).') in run['out']
    message = next(line for line in run['out'].splitlines()
                   if 'Interrupted by' in line)
    assert message.split(' - WARNING - ')[1].startswith(
        f'Interrupted by {name} after iteration 6 (epoch 2, 2/4): saved '
        f'{path} in ')
    assert message.endswith(
        ' s. Continue with `--resume` (it reads last_checkpoint) or '
        f'`--resume {path}`.')
    assert 'Traceback' not in run['out']
    ckpt = torch.load(path, weights_only=True)
    assert (ckpt['meta']['epoch'], ckpt['meta']['iter']) == (1, 6)
    # Warm-up over (6 iterations), x0.1 after epoch 1.
    assert ckpt['optimizer']['param_groups'][0]['lr'] == pytest.approx(0.01)
    assert ckpt['param_schedulers'][1]['last_step'] == 1
    assert run['pointer'] == str(path)
    assert len(ckpt['message_hub']['log_scalars']['train/loss']
               ['log_history']) == 6


@pytest.mark.parametrize('name', list(SIGNALS))
def test_resume_after_signal_equals_uninterrupted_run(
        interrupted_runs, straight_toy_run, name):
    work_dir = interrupted_runs[name]['dir']
    assert_same_state(straight_toy_run / 'epoch_3.pth',
                      work_dir / 'epoch_3.pth')
    (expected, ), (interrupted, resumed) = (logged_scalars(straight_toy_run),
                                            logged_scalars(work_dir))
    # Iterations 1-6 and epoch 1's validation, then 7-12 after the resume.
    assert interrupted == expected[:7]
    assert resumed == expected[7:]
    assert (resumed[0]['epoch'], resumed[0]['iter']) == (2, 7)


def test_duplicate_signal_is_ignored_and_a_later_one_stops_at_once(
        monkeypatch, capsys):
    now = [100.0]
    monkeypatch.setattr(time, 'monotonic', lambda: now[0])
    recorder = SignalRecorder()
    before = signal.getsignal(signal.SIGINT)
    recorder.install()
    try:
        assert signal.getsignal(signal.SIGTERM) == recorder._record
        recorder._record(signal.SIGINT, None)
        assert recorder.signum == signal.SIGINT
        # torchrun forwards the Ctrl-C the terminal already delivered.
        now[0] += DUPLICATE_WINDOW - 0.5
        recorder._record(signal.SIGINT, None)
        assert recorder.installed
        now[0] += 1.0
        with pytest.raises(KeyboardInterrupt, match='second SIGINT'):
            recorder._record(signal.SIGINT, None)
        # The user's own handlers are back.
        assert not recorder.installed
        assert signal.getsignal(signal.SIGINT) is before
    finally:
        recorder.uninstall()
    assert capsys.readouterr().out.count('SIGINT received') == 1


def test_a_late_signal_after_a_decided_stop_exits_with_its_status(
        tmp_path):
    # What a rank still tearing down sees when torchrun SIGTERMs it after
    # the other rank's clean exit: status 143 and its output, not -15.
    script = tmp_path / 'late.py'
    script.write_text(
        'import os, signal, time\n'
        'from detkit.engine.interrupts import SignalRecorder\n'
        'SignalRecorder.exit_on_late_signals(143)\n'
        'print("tearing down", end="")\n'
        'os.kill(os.getpid(), signal.SIGTERM)\n'
        'time.sleep(30)\n'
        'print("not reached")\n')
    done = subprocess.run([sys.executable, str(script)], capture_output=True,
                          text=True, timeout=60)
    assert done.returncode == 143, done.stderr
    assert done.stdout == 'tearing down'


def test_a_training_that_raises_gives_the_handlers_back(tmp_path):
    before = signal.getsignal(signal.SIGINT), signal.getsignal(
        signal.SIGTERM)

    class Crash(Hook):

        def before_train_iter(self, runner, batch_idx, data_batch=None):
            if runner.iter == 2:
                raise RuntimeError('deliberate crash')

    runner = DetRunner.from_cfg(Config(toy_cfg(tmp_path, max_epochs=1)))
    runner.register_hook(Crash())
    with pytest.raises(RuntimeError, match='deliberate crash'):
        runner.train()
    assert (signal.getsignal(signal.SIGINT),
            signal.getsignal(signal.SIGTERM)) == before


def test_validation_interrupted_points_to_the_epoch_checkpoint(tmp_path):
    """A signal during validation: no new checkpoint, the message names
    the one --resume will use (written before validation began)."""
    cfg = write_toy_config(
        tmp_path / 'toy.py', max_epochs=1,
        custom_hooks=[dict(type='_SignalDuringValHook')])
    proc = start_train(cfg, tmp_path / 'work')
    out, = wait_all([proc])
    assert proc.returncode == 143, out[-3000:]
    epoch_1 = tmp_path / 'work' / 'epoch_1.pth'
    assert ('Interrupted by SIGTERM during the validation after epoch 1: '
            f'`--resume` continues from {epoch_1} (saved before validation '
            'began) and validates that epoch first.') in out
    assert not list(osp.basename(p) for p in (tmp_path / 'work').glob(
        'interrupted_*'))
