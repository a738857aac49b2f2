"""One training per work_dir: a lock file with the owner's pid and host.

Two trainings writing into one work_dir overwrite each other's
``epoch_N.pth``, ``best_*.pth`` and ``last_checkpoint`` without a word.
:class:`WorkDirLock` makes the second one refuse to start instead. The lock
is ``<work_dir>/.train.lock``, created with ``O_EXCL`` (so of two runs
starting at once exactly one gets it) and holding, as JSON, who owns it::

    {"pid": 4242, "host": "node1", "started": "2026-12-04 02:13:09",
     "proc_start": "81234", "command": "tools/train.py cfg.py ..."}

A lock whose owner is gone (a run killed with SIGKILL, a crashed node) is
*stale*. On the same host that is decided for sure: no process has that
pid, or the process that has it started at another time (the pid was
reused; ``proc_start`` is field 22 of ``/proc/<pid>/stat``). Such a lock is
reported and taken over. A lock from another host cannot be checked from
here: the run refuses and says how to remove the lock if that run is gone.

Only training takes the lock (rank 0 alone in distributed runs, see
:meth:`DetRunner.train <detkit.engine.runner.DetRunner.train>`); testing
may read the same work_dir at any time.
"""
import json
import os
import os.path as osp
import socket
import sys
import time

LOCK_NAME = '.train.lock'


class WorkDirLockedError(RuntimeError):
    """Another live training holds the work_dir's lock."""


def _proc_start(pid):
    """The start time of process ``pid`` in clock ticks since boot, as a
    string, or None where /proc cannot tell."""
    try:
        with open(f'/proc/{pid}/stat') as f:
            stat = f.read()
    except OSError:
        return None
    # The command name (field 2) may hold spaces and parentheses: count
    # the fields after its closing parenthesis.
    fields = stat[stat.rfind(')') + 2:].split()
    return fields[19] if len(fields) > 19 else None


def _pid_alive(pid):
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by another user
        return True
    return True


def describe_owner(owner):
    """``pid 4242 on host node1, started 2026-12-04 02:13:09 (tools/...)``"""
    text = (f'pid {owner.get("pid")} on host {owner.get("host")!r}, '
            f'started {owner.get("started")}')
    if owner.get('command'):
        text += f' ({owner["command"]})'
    return text


class WorkDirLock:
    """The training lock of ``work_dir``.

    Args:
        work_dir (str): the run's work_dir (created if missing).
        log (callable): ``log(message)`` for the one line said when a
            stale lock is taken over (default: print to stderr).
    """

    def __init__(self, work_dir, log=None):
        self.path = osp.join(osp.abspath(work_dir), LOCK_NAME)
        self.log = log or (lambda msg: print(msg, file=sys.stderr))
        self.owner = None  # what this process wrote, once it holds the lock

    def acquire(self):
        """Take the lock, or raise :class:`WorkDirLockedError` naming the
        run that holds it. A stale lock is reported and replaced."""
        os.makedirs(osp.dirname(self.path), exist_ok=True)
        for _ in range(3):  # a stale lock removed: try to create again
            if self._create():
                return self
            owner = self._read()
            if owner is None:
                continue  # vanished (released) or half-written: retry
            reason = self._stale_reason(owner)
            if reason is None:
                raise WorkDirLockedError(self._refusal(owner))
            self.log(f'Taking over the stale lock {self.path}: it belonged '
                     f'to {describe_owner(owner)}, which {reason}.')
            try:
                os.remove(self.path)
            except FileNotFoundError:
                pass
        raise WorkDirLockedError(
            f'Could not take the lock {self.path}: other runs keep '
            'creating it. Start one training per work_dir.')

    def release(self):
        """Remove the lock if it is still this process's."""
        if self.owner is None:
            return
        if self._read() == self.owner:
            try:
                os.remove(self.path)
            except FileNotFoundError:
                pass
        self.owner = None

    def __enter__(self):
        return self.acquire()

    def __exit__(self, *exc):
        self.release()

    def _create(self):
        owner = dict(
            pid=os.getpid(),
            host=socket.gethostname(),
            started=time.strftime('%Y-%m-%d %H:%M:%S'),
            proc_start=_proc_start(os.getpid()),
            command=' '.join(sys.argv))
        try:
            fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_EXCL,
                         0o644)
        except FileExistsError:
            return False
        with os.fdopen(fd, 'w') as f:
            json.dump(owner, f)
        self.owner = owner
        return True

    def _read(self):
        try:
            with open(self.path) as f:
                owner = json.load(f)
        except (OSError, ValueError):
            return None
        return owner if isinstance(owner, dict) else None

    @staticmethod
    def _stale_reason(owner):
        """Why the lock's owner is known to be gone, or None."""
        if owner.get('host') != socket.gethostname():
            return None  # cannot be checked from this host
        pid = owner.get('pid')
        if not isinstance(pid, int):
            return None
        if not _pid_alive(pid):
            return 'is no longer running'
        started = _proc_start(pid)
        if (owner.get('proc_start') is not None and started is not None
                and started != owner['proc_start']):
            return 'is no longer running (its pid now belongs to another ' \
                'process)'
        return None

    def _refusal(self, owner):
        work_dir = osp.dirname(self.path)
        text = (f'work_dir {work_dir} is in use by another training: '
                f'{describe_owner(owner)}. Two runs in one work_dir '
                'overwrite each other\'s checkpoints. Wait for that run to '
                'finish, or give this one another --work-dir.')
        if owner.get('host') != socket.gethostname():
            text += (f' That run is on another host and cannot be checked '
                     f'from here: if it is no longer running, delete '
                     f'{self.path}.')
        return text
