"""Ctrl-C and SIGTERM during training: stop at an iteration every rank
agrees on, save a checkpoint of it, say where, exit non-zero.

SIGTERM is what Slurm (and torchrun, which forwards it to every worker)
sends some 30 s before SIGKILL; Ctrl-C sends SIGINT to every process of the
terminal's job. :class:`InterruptCheckpointHook` (registered by
:class:`~detkit.engine.runner.DetRunner` for every training) turns either
into:

1. the signal handler only records the signal (a second one more than
   :data:`DUPLICATE_WINDOW` s later stops at once, without a checkpoint;
   within the window it is the same interrupt delivered twice, e.g. by the
   terminal and by torchrun);
2. after every training iteration the ranks combine their records (one
   ``all_reduce`` of a single integer), so all of them see the signal at
   the same iteration even when it reached only some;
3. rank 0 saves ``interrupted_iter_<N>.pth`` (N: iterations done) with the
   optimizer, schedulers and log history, and points ``last_checkpoint``
   at it; ``--resume`` continues from it exactly (the epoch loop skips the
   batches already trained, :mod:`.loops`);
4. every rank exits with ``128 + signal`` (130 for SIGINT, 143 for SIGTERM)
   through :class:`TrainingInterrupted` (a ``SystemExit``: no traceback).
   With several processes, a stop signal that arrives after that point
   ends the process at once with the same status: torchrun sends SIGTERM
   to the ranks still running as soon as the first one has exited, and a
   rank still tearing down would otherwise die of the signal (status -15)
   after a clean stop. The checkpoint is complete by then (step 3 ends in
   a barrier).

During validation the epoch's checkpoint, written before validation began,
is the place to resume from (the resumed run validates that epoch first),
so the hook stops after the current validation batch without writing
another. With several processes it does so only when every rank has as
many validation batches (checked once per validation: the per-batch
``all_reduce`` must pair up); otherwise the signal waits for the next
training iteration.
"""
import os
import os.path as osp
import signal
import sys
import threading
import time

import torch
from mmengine.dist import (all_reduce, barrier, get_world_size,
                           is_main_process)
from mmengine.hooks import Hook
from mmengine.runner import EpochBasedTrainLoop

from .checkpoint import atomic_write

STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)
DUPLICATE_WINDOW = 2.0  # seconds


class TrainingInterrupted(SystemExit):
    """Training stopped on a signal; the exit status is ``128 + signum``.
    Every rank raises it after the same iteration (``all_ranks``)."""

    all_ranks = True

    def __init__(self, signum, message):
        super().__init__(128 + signum)
        self.signum = signum
        self.message = message


class SignalRecorder:
    """Records the first of :data:`STOP_SIGNALS` instead of dying on it.

    ``install()`` works from the main thread only (Python delivers signals
    there); elsewhere it does nothing and the signals keep their handlers.
    """

    def __init__(self):
        self.signum = None
        self._time = None
        self._previous = {}
        self._announce = True

    @property
    def installed(self):
        return bool(self._previous)

    def install(self, announce=True):
        """``announce``: print a line when a signal arrives (rank 0)."""
        if threading.current_thread() is not threading.main_thread():
            return
        self._announce = announce
        self.signum = self._time = None
        for signum in STOP_SIGNALS:
            self._previous[signum] = signal.signal(signum, self._record)

    def uninstall(self):
        for signum, handler in self._previous.items():
            signal.signal(signum, handler)
        self._previous.clear()

    @staticmethod
    def exit_on_late_signals(status):
        """From now on a stop signal ends the process with ``status`` (the
        stop is already decided and saved; see step 4 of the module
        docstring). Main thread only, like :meth:`install`."""
        if threading.current_thread() is not threading.main_thread():
            return

        def _exit(signum, frame):
            for stream in (sys.stdout, sys.stderr):
                try:
                    stream.flush()
                except (OSError, ValueError):
                    pass
            os._exit(status)

        for signum in STOP_SIGNALS:
            signal.signal(signum, _exit)

    def _record(self, signum, frame):
        now = time.monotonic()
        if self.signum is None:
            self.signum, self._time = signum, now
            if self._announce:
                print(f'\n{signal.Signals(signum).name} received: training '
                      'stops after this iteration and saves a checkpoint '
                      f'(again, after {DUPLICATE_WINDOW:.0f} s, to stop at '
                      'once without one).', flush=True)
        elif now - self._time > DUPLICATE_WINDOW:
            self.uninstall()
            raise KeyboardInterrupt(
                f'second {signal.Signals(signum).name}: stopped without '
                'saving a checkpoint')


class InterruptCheckpointHook(Hook):
    """See the module docstring. Registered by DetRunner; takes no
    arguments."""

    priority = 'LOWEST'  # after the checkpoint, logger and scheduler hooks

    def __init__(self):
        self.recorder = SignalRecorder()
        self._check_val_iters = False

    def before_train(self, runner):
        self.recorder.install(announce=is_main_process())

    def after_train(self, runner):
        self.recorder.uninstall()

    def after_train_iter(self, runner, batch_idx, data_batch=None,
                         outputs=None):
        signum = self._agreed_signal()
        if not signum:
            return
        done = runner.iter + 1  # the loop counts this iteration after us
        start = time.monotonic()
        path = osp.join(runner.work_dir, f'interrupted_iter_{done}.pth')
        runner.save_checkpoint(
            runner.work_dir, osp.basename(path),
            meta=dict(epoch=runner.epoch, iter=done), by_epoch=False)
        if is_main_process():
            atomic_write(osp.join(runner.work_dir, 'last_checkpoint'),
                         lambda f: f.write(path.encode()))
        barrier()  # no rank leaves before the file is complete
        where = f'iteration {done}'
        if isinstance(runner.train_loop, EpochBasedTrainLoop):
            per_epoch = len(runner.train_dataloader)
            where += (f' (epoch {runner.epoch + 1}, '
                      f'{done - runner.epoch * per_epoch}/{per_epoch})')
        self._stop(runner, signum,
                   f'Interrupted by {signal.Signals(signum).name} after '
                   f'{where}: saved {path} in '
                   f'{time.monotonic() - start:.1f} s. Continue with '
                   '`--resume` (it reads last_checkpoint) or '
                   f'`--resume {path}`.')

    def before_val_epoch(self, runner):
        self._check_val_iters = self.recorder.installed
        if self._check_val_iters and get_world_size() > 1:
            batches = len(runner.val_dataloader)
            spread = torch.tensor([batches, -batches], dtype=torch.int64)
            all_reduce(spread, op='max')  # (most, -fewest) over the ranks
            self._check_val_iters = int(spread[0]) == -int(spread[1])

    def after_val_iter(self, runner, batch_idx, data_batch=None,
                       outputs=None):
        if not self._check_val_iters:
            return  # runner.val() on its own, or uneven batches per rank
        signum = self._agreed_signal()
        if not signum:
            return
        last = osp.join(runner.work_dir, 'last_checkpoint')
        pointer = None
        if osp.isfile(last):
            with open(last) as f:
                pointer = f.read().strip()
        then = (f'`--resume` continues from {pointer} (saved before '
                'validation began) and validates that epoch first.'
                if pointer else 'no checkpoint was saved yet, so `--resume` '
                'starts from scratch.')
        self._stop(runner, signum,
                   f'Interrupted by {signal.Signals(signum).name} during the '
                   f'validation after epoch {runner.epoch}: {then}')

    def _agreed_signal(self):
        """The signal any rank recorded (the highest number if several),
        or 0; every rank calls this at the same point of every iteration.
        """
        local = self.recorder.signum or 0
        if get_world_size() == 1:
            return local
        flag = torch.tensor([local], dtype=torch.int64)
        all_reduce(flag, op='max')
        return int(flag.item())

    def _stop(self, runner, signum, message):
        runner.logger.warning(message)
        self.recorder.uninstall()
        if get_world_size() > 1:
            self.recorder.exit_on_late_signals(128 + signum)
        runner.visualizer.close()
        raise TrainingInterrupted(signum, message)
