"""What --resume and train_cfg say when given the wrong thing: a
weights-only file, a truncated file, nothing to resume from, a moved
work_dir, a misspelled train_cfg key."""
import glob
import os.path as osp

import pytest
import torch
from engine_toys import toy_cfg
from mmengine.config import Config

from detkit.engine import DetRunner, load_checkpoint_file
from detkit.engine.checkpoint import CheckpointCorruptError


def _runner(work_dir, **overrides):
    return DetRunner.from_cfg(Config(toy_cfg(work_dir, **overrides)))


def _log_text(work_dir):
    logs = sorted(glob.glob(osp.join(str(work_dir), '*', '*.log')))
    with open(logs[-1]) as f:
        return f.read()


@pytest.fixture(scope='module')
def one_epoch(tmp_path_factory):
    """A finished 1-epoch run: epoch_1.pth and last_checkpoint."""
    work_dir = tmp_path_factory.mktemp('one_epoch')
    _runner(work_dir, max_epochs=1).train()
    return work_dir


@pytest.mark.parametrize('meta', [None, dict(dataset_meta={})])
def test_resume_from_weights_only_file_points_to_load_from(
        tmp_path, one_epoch, meta):
    ckpt = torch.load(one_epoch / 'epoch_1.pth', weights_only=True)
    weights = dict(state_dict=ckpt['state_dict'])
    if meta is not None:
        weights['meta'] = meta
    path = str(tmp_path / 'published.pth')
    torch.save(weights, path)
    runner = _runner(tmp_path / 'work', resume=True, load_from=path)
    with pytest.raises(RuntimeError) as info:
        runner.train()  # was: KeyError: 'epoch'
    what = ('has no meta' if meta is None else
            "has no 'epoch' or 'iter' in its meta")
    assert str(info.value) == (
        f'Cannot resume from {path}: it {what}, so it is a weights-only '
        'file (a published or converted model), not a training checkpoint. '
        'To start a new training from its weights, use load_from '
        f'(--cfg-options load_from={path}) without --resume; to continue a '
        'training, resume from one of its epoch_N.pth / iter_N.pth '
        'checkpoints.')
    # As suggested, load_from without resume trains from those weights.
    _runner(tmp_path / 'work2', max_epochs=1, load_from=path).train()


def test_resume_from_truncated_file_names_it_and_the_previous_one(
        tmp_path, one_epoch):
    data = (one_epoch / 'epoch_1.pth').read_bytes()
    work_dir = tmp_path / 'work'
    work_dir.mkdir()
    (work_dir / 'epoch_1.pth').write_bytes(data)
    truncated = work_dir / 'epoch_2.pth'
    truncated.write_bytes(data[:len(data) // 2])
    runner = _runner(work_dir, resume=True, load_from=str(truncated))
    with pytest.raises(CheckpointCorruptError) as info:
        runner.train()
    assert info.value.__cause__ is None and info.value.__suppress_context__
    text = str(info.value)
    assert text.startswith(f'{truncated} is truncated or corrupt '
                           f'({len(data) // 2} bytes; torch says ')
    assert text.endswith(
        '): a write that did not finish, or an incomplete copy or download. '
        f'Use the previous checkpoint (newest first: {work_dir}/epoch_1.pth'
        '), or copy or download this one again.')


@pytest.mark.parametrize('kind', ['empty', 'zip_cut', 'legacy_cut'])
def test_load_checkpoint_file_names_a_damaged_file(tmp_path, kind):
    full = tmp_path / 'full.pth'
    torch.save(dict(w=torch.arange(1000.)), full,
               _use_new_zipfile_serialization=kind != 'legacy_cut')
    data = full.read_bytes()
    path = tmp_path / 'damaged.pth'
    path.write_bytes(b'' if kind == 'empty' else data[:len(data) // 3])
    with pytest.raises(CheckpointCorruptError,
                       match=f'^{path} is truncated or corrupt .* Use the '
                       f'previous checkpoint \\(newest first: {full}\\)'):
        load_checkpoint_file(str(path))
    # A whole file loads, whatever it holds (callers judge the content).
    torch.save([1, 2], path)
    assert load_checkpoint_file(str(path)) == [1, 2]


def test_resume_with_nothing_to_resume_starts_from_scratch(tmp_path):
    runner = _runner(tmp_path, max_epochs=1, resume=True,
                     log_level='INFO')
    runner.train()
    assert (runner.epoch, runner.iter) == (1, 4)
    log = _log_text(tmp_path)
    assert (f'--resume: no checkpoint to resume from in {tmp_path} (no '
            'last_checkpoint file and no epoch_N.pth / iter_N.pth): training '
            'starts from scratch.') in log
    assert 'None' not in log.split('training starts from scratch')[0][-300:]


def test_resume_after_the_work_dir_was_moved(tmp_path, one_epoch):
    moved = tmp_path / 'moved'
    moved.mkdir()
    (moved / 'epoch_1.pth').write_bytes(
        (one_epoch / 'epoch_1.pth').read_bytes())
    pointer = moved / 'last_checkpoint'
    pointer.write_text(str(one_epoch / 'gone' / 'epoch_1.pth'))
    runner = _runner(moved, max_epochs=2, resume=True)
    runner.train()
    assert runner.iter == 8  # resumed at 4
    assert (f'{pointer} names {one_epoch}/gone/epoch_1.pth, which does not '
            f'exist; using {moved}/epoch_1.pth (the work_dir was moved?).'
            ) in _log_text(moved)
    empty = tmp_path / 'empty'
    empty.mkdir()
    (empty / 'last_checkpoint').write_text('/nowhere/epoch_9.pth')
    with pytest.raises(FileNotFoundError) as info:
        _runner(empty, resume=True).train()
    assert str(info.value) == (
        f'{empty}/last_checkpoint names /nowhere/epoch_9.pth, which does not '
        f'exist (nor does {empty}/epoch_9.pth). Pass the checkpoint to '
        'continue from with --resume PATH, or delete last_checkpoint to '
        'start from scratch.')


@pytest.mark.parametrize('train_cfg', [
    dict(by_epoch=True, max_epoch=2),
    dict(type='EpochBasedTrainLoop', max_epoch=2),
])
def test_misspelled_train_cfg_key_suggests_the_right_one(tmp_path,
                                                         train_cfg):
    runner = _runner(tmp_path, train_cfg=train_cfg)
    with pytest.raises(TypeError) as info:
        runner.train()
    assert str(info.value) == (
        "train_cfg has an unknown key 'max_epoch' for EpochBasedTrainLoop. "
        "Did you mean 'max_epochs'?")


def test_iteration_loop_keys_are_checked_too(tmp_path):
    runner = _runner(tmp_path, train_cfg=dict(by_epoch=False, max_iter=3))
    with pytest.raises(TypeError, match="unknown key 'max_iter' for "
                       "IterBasedTrainLoop. Did you mean 'max_iters'"):
        runner.train()
