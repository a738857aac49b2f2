"""Checkpoints and the last_checkpoint pointer are written atomically."""
import os

import pytest
import torch
from engine_toys import toy_cfg
from mmengine.config import Config

from detkit.engine import DetRunner, atomic_write


class DiskFull(OSError):
    pass


def _crash_on_second_save(monkeypatch):
    """Let the first torch.save through; the second writes 100 bytes of its
    output and then fails, as a full disk or a killed process would."""
    real_save = torch.save
    calls = []

    def save(obj, f, *args, **kwargs):
        calls.append(1)
        if len(calls) == 1:
            return real_save(obj, f, *args, **kwargs)
        f.write(b'PK\x03\x04' + b'\0' * 96)
        raise DiskFull('No space left on device')

    monkeypatch.setattr(torch, 'save', save)
    return calls


def test_crash_while_saving_keeps_previous_checkpoint_and_pointer(
        tmp_path, monkeypatch):
    calls = _crash_on_second_save(monkeypatch)
    runner = DetRunner.from_cfg(Config(toy_cfg(tmp_path, max_epochs=2)))
    with pytest.raises(DiskFull):
        runner.train()
    assert len(calls) == 2
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
