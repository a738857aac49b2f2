"""BrokenImageReportHook; detkit's CheckpointHook (registration, keeping
the last N checkpoints, publishing)."""
import hashlib
from types import SimpleNamespace

import torch
from engine_toys import EngineToyDataset, toy_cfg
from mmengine.config import Config
from mmengine.hooks import CheckpointHook

from detkit.engine import BrokenImageReportHook, DetCheckpointHook, DetRunner
from detkit.registry import HOOKS


class ListLogger:

    def __init__(self):
        self.warnings = []

    def warning(self, msg):
        self.warnings.append(msg)


def _fake_runner(dataset):
    return SimpleNamespace(
        train_dataloader=SimpleNamespace(dataset=dataset),
        logger=ListLogger())


def test_broken_image_report_is_logged_once_per_epoch():
    report = '2 images could not be read: a.jpg, b.jpg'
    runner = _fake_runner(EngineToyDataset(broken=report))
    hook = BrokenImageReportHook()
    hook.after_train_epoch(runner)
    assert runner.logger.warnings == [report]
    hook.after_train_epoch(runner)
    assert runner.logger.warnings == [report, report]


def test_no_report_for_empty_string_or_no_method():
    for dataset in (EngineToyDataset(broken=''), [1, 2, 3]):
        runner = _fake_runner(dataset)
        BrokenImageReportHook().after_train_epoch(runner)
        assert runner.logger.warnings == []


def test_wrapped_datasets_are_looked_through():
    # Shaped like mmengine's RepeatDataset (.dataset) / ConcatDataset
    # (.datasets).
    repeat = SimpleNamespace(
        dataset=EngineToyDataset(broken='x.jpg unreadable'))
    concat = SimpleNamespace(
        datasets=[repeat, EngineToyDataset(broken='y.jpg empty')])
    runner = _fake_runner(concat)
    BrokenImageReportHook().after_train_epoch(runner)
    assert runner.logger.warnings == ['x.jpg unreadable', 'y.jpg empty']


def test_hook_runs_in_training(tmp_path):
    cfg = toy_cfg(tmp_path, max_epochs=2,
                  custom_hooks=[dict(type='BrokenImageReportHook')])
    cfg['train_dataloader']['dataset']['broken'] = 'bad.jpg: truncated'
    runner = DetRunner.from_cfg(Config(cfg))
    logger = ListLogger()
    runner.logger.warning = logger.warning
    runner.train()
    assert logger.warnings.count('bad.jpg: truncated') == 2


def test_checkpoint_hook_name_resolves_to_atomic_subclass():
    assert HOOKS.get('CheckpointHook') is DetCheckpointHook
    assert issubclass(DetCheckpointHook, CheckpointHook)


def test_max_keep_ckpts_pointer_and_published_model(tmp_path):
    cfg = toy_cfg(tmp_path, max_epochs=3)
    cfg['default_hooks']['checkpoint'] = dict(
        type='CheckpointHook', interval=1, max_keep_ckpts=2,
        published_keys=['meta', 'state_dict'])
    runner = DetRunner.from_cfg(Config(cfg))
    runner.train()
    names = {p.name for p in tmp_path.glob('*.pth')}
    published = names - {'epoch_2.pth', 'epoch_3.pth'}
    assert len(names) == 3 and len(published) == 1
    assert (tmp_path / 'last_checkpoint').read_text() == str(
        tmp_path / 'epoch_3.pth')
    assert runner.message_hub.get_info('keep_ckpt_ids') == [2, 3]
    # The published file is named by the sha256 of its own bytes.
    published = tmp_path / published.pop()
    sha = hashlib.sha256(published.read_bytes()).hexdigest()
    assert published.name == f'epoch_3-{sha[:8]}.pth'
    assert sorted(torch.load(published, weights_only=True)) == [
        'meta', 'state_dict']
