"""A NaN loss in the middle of a real training run: the run stops naming
the iteration, the loss terms and the images (default), or skips that
step and trains on (``model.skip_nonfinite=True``)."""
import logging

import pytest
import torch
from mmengine.logging import MMLogger
from reliability_toys import make_shapes, read_jsonl, tiny_cfg
from reliability_toys import one_thread  # noqa: F401 (a fixture)

from detkit.engine import DetRunner
from detkit.models.detectors import NonFiniteLossError

pytestmark = pytest.mark.usefixtures('one_thread')


def _hooks(nan_at):
    return [dict(type='_RecordHook'),
            dict(type='_NaNAtIterHook', iteration=nan_at)]


@pytest.fixture(scope='module')
def shapes(tmp_path_factory):
    return make_shapes(tmp_path_factory.mktemp('shapes'))


def _runner(shapes, work_dir, nan_at, **model):
    return DetRunner.from_cfg(tiny_cfg(
        shapes, work_dir, model=model, custom_hooks=_hooks(nan_at),
        train_cfg=dict(max_epochs=1, val_interval=2), log_level='WARNING'))


def _ids_of_iteration(work_dir, iteration):
    return read_jsonl(work_dir / 'batches.jsonl')[iteration - 1]['ids']


def test_nan_loss_stops_the_run_by_default(shapes, tmp_path):
    runner = _runner(shapes, tmp_path, nan_at=2)
    with pytest.raises(NonFiniteLossError) as err:
        runner.train()
    ids = _ids_of_iteration(tmp_path, 2)
    assert str(err.value) == (
        f'Non-finite loss at iteration 2: loss, loss_bbox (images in this '
        f'batch: {ids}). Training stopped. Lower the learning rate, add '
        'warm-up or gradient clipping (optim_wrapper.clip_grad), check '
        "these images' annotations, or set model.skip_nonfinite=True to "
        'skip such steps.')
    assert runner.iter == 1 and not list(tmp_path.glob('*.pth'))


def test_skip_nonfinite_skips_the_step_and_trains_on(shapes, tmp_path):
    runner = _runner(shapes, tmp_path, nan_at=3, skip_nonfinite=True)
    warnings = []
    handler = logging.Handler(logging.WARNING)
    handler.emit = lambda record: warnings.append(record.getMessage())
    logger = MMLogger.get_current_instance()
    logger.addHandler(handler)
    try:
        runner.train()
    finally:
        logger.removeHandler(handler)
    ids = _ids_of_iteration(tmp_path, 3)
    skipped = [w for w in warnings if w.startswith('Non-finite')]
    assert skipped == [
        f'Non-finite loss at iteration 3: loss, loss_bbox (images in this '
        f'batch: {ids}). Step skipped (skip_nonfinite=True; 1 skipped so '
        'far).'
    ]
    assert runner.model.num_skipped_steps == 1
    assert runner.iter == 4  # iteration 4 trained after the skipped one
    ckpt = torch.load(tmp_path / 'epoch_1.pth', weights_only=True)
    assert all(torch.isfinite(v).all() for v in ckpt['state_dict'].values()
               if v.is_floating_point())
    losses = ckpt['message_hub']['log_scalars']['train/loss']['log_history']
    assert [v == v for v in losses] == [True, True, False, True]  # NaN
