"""Checkpoints and the last_checkpoint pointer are written atomically; a
full disk says so in one line."""
import errno
import os
import re

import pytest
import torch
from engine_toys import toy_cfg
from mmengine.config import Config

from detkit.engine import DetRunner, atomic_write
from detkit.engine.checkpoint import DiskFullError


def _disk_full_on_second_save(monkeypatch, chained):
    """Let the first torch.save through; the second writes 100 bytes of its
    output and then fails with ENOSPC, plain or (``chained``) wrapped in a
    RuntimeError the way torch's zip writer reports it."""
    real_save = torch.save
    calls = []

    def save(obj, f, *args, **kwargs):
        calls.append(1)
        if len(calls) == 1:
            return real_save(obj, f, *args, **kwargs)
        f.write(b'PK\x03\x04' + b'\0' * 96)
        full = OSError(errno.ENOSPC, 'No space left on device')
        if not chained:
            raise full
        try:
            raise full
        except OSError:
            raise RuntimeError('[enforce fail at inline_container.cc:664] '
                               '. unexpected pos 64 vs 0')

    monkeypatch.setattr(torch, 'save', save)
    return calls


@pytest.mark.parametrize('chained', [False, True])
def test_disk_full_while_saving_keeps_previous_checkpoint_and_pointer(
        tmp_path, monkeypatch, chained):
    calls = _disk_full_on_second_save(monkeypatch, chained)
    runner = DetRunner.from_cfg(Config(toy_cfg(tmp_path, max_epochs=2)))
    with pytest.raises(DiskFullError) as info:
        runner.train()
    assert len(calls) == 2
    # One message, not chained to torch's: the file, the free space, what
    # is left as it was, what to do.
    assert info.value.__cause__ is None and info.value.__suppress_context__
    assert info.value.errno == errno.ENOSPC
    assert re.fullmatch(
        r'\[Errno 28\] No space left on device while writing '
        + re.escape(str(tmp_path / 'epoch_2.pth')) +
        r' \(\d+\.\d MiB free on that file system\)\. Nothing was '
        r'replaced: the previous checkpoint and last_checkpoint are as they '
        r'were\. Free some space \(fewer kept checkpoints: '
        r'default_hooks\.checkpoint\.max_keep_ckpts\) or use another '
        r'--work-dir, then continue with --resume\.', str(info.value))
    # Epoch 1's checkpoint and the pointer to it are intact ...
    with open(tmp_path / 'last_checkpoint') as f:
        assert f.read() == str(tmp_path / 'epoch_1.pth')
    ckpt = torch.load(tmp_path / 'epoch_1.pth', weights_only=True)
    assert (ckpt['meta']['epoch'], ckpt['meta']['iter']) == (1, 4)
    # ... nothing carries epoch 2's name, and no temporary file is left.
    names = os.listdir(tmp_path)
    assert [n for n in names
            if n.endswith('.pth') or n.startswith('.')] == ['epoch_1.pth']


def test_atomic_write_replaces_whole_file_or_nothing(tmp_path):
    path = tmp_path / 'last_checkpoint'
    atomic_write(path, lambda f: f.write(b'old'))

    def crash(f):
        f.write(b'new but trunc')
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        atomic_write(path, crash)
    assert path.read_bytes() == b'old'
    assert os.listdir(tmp_path) == ['last_checkpoint']
    atomic_write(path, lambda f: f.write(b'new'))
    assert path.read_bytes() == b'new'
    # Same permissions as a plain open() would give (umask applied).
    umask = os.umask(0)
    os.umask(umask)
    assert os.stat(path).st_mode & 0o777 == 0o666 & ~umask
