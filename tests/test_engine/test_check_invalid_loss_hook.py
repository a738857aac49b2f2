"""CheckInvalidLossHook: the SSD configs' hook builds, and a NaN loss in a
real run stops through detkit's one non-finite guard (same message, same
iteration) or is skipped with ``skip_nonfinite``; a model or wrapper without
the guard is refused before training."""
import logging
import os.path as osp
import sys

import pytest
import torch
from conftest import require_shared
from mmengine.config import Config
from mmengine.model import BaseModel, MMDistributedDataParallel

from detkit.engine import DetRunner
from detkit.engine.hooks import CheckInvalidLossHook
from detkit.models.detectors import NonFiniteLossError
from detkit.registry import HOOKS

sys.path.insert(0, osp.join(osp.dirname(osp.dirname(__file__)),
                            'test_reliability'))
from reliability_toys import make_shapes, read_jsonl, tiny_cfg  # noqa: E402
from reliability_toys import one_thread  # noqa: E402,F401 (a fixture)


@pytest.fixture(scope='module')
def shapes(tmp_path_factory):
    return make_shapes(tmp_path_factory.mktemp('shapes'))


def _capture(logger):
    """The messages ``logger`` emits from now on."""
    lines = []
    handler = logging.Handler(logging.INFO)
    handler.emit = lambda record: lines.append(record.getMessage())
    logger.addHandler(handler)
    return lines


def test_the_ssd_configs_custom_hooks_build():
    for config in ('ssd300_coco.py',
                   'ssdlite_mobilenetv2-scratch_8xb24-600e_coco.py'):
        cfg = Config.fromfile(require_shared(
            'reference', 'mmdet-3.3.0', 'configs', 'ssd', config))
        hooks = []
        for hook_cfg in cfg.custom_hooks:
            hook_cfg = dict(hook_cfg)
            priority = hook_cfg.pop('priority', 'NORMAL')  # the runner's key
            hooks.append((HOOKS.build(hook_cfg), priority))
        assert [(type(h).__name__, p) for h, p in hooks] == [
            ('NumClassCheckHook', 'NORMAL'),
            ('CheckInvalidLossHook', 'VERY_LOW')]
        assert hooks[1][0].interval == 50


def _runner(shapes, work_dir, nan_at=None, **model):
    hooks = [dict(type='_RecordHook'),
             dict(type='CheckInvalidLossHook', interval=50,
                  priority='VERY_LOW')]
    if nan_at is not None:
        hooks.append(dict(type='_NaNAtIterHook', iteration=nan_at))
    return DetRunner.from_cfg(tiny_cfg(
        shapes, work_dir, model=model, custom_hooks=hooks,
        train_cfg=dict(max_epochs=1, val_interval=2), log_level='INFO'))


@pytest.mark.usefixtures('one_thread')
def test_a_nan_loss_stops_with_the_guard_message(shapes, tmp_path):
    runner = _runner(shapes, tmp_path, nan_at=2)
    log_lines = _capture(runner.logger)
    assert any(isinstance(h, CheckInvalidLossHook) for h in runner.hooks)
    with pytest.raises(NonFiniteLossError) as err:
        runner.train()
    ids = read_jsonl(tmp_path / 'batches.jsonl')[1]['ids']
    # iteration 2, not the next multiple of interval=50: nothing was
    # stepped with the NaN loss
    assert str(err.value) == (
        f'Non-finite loss at iteration 2: loss, loss_bbox (images in this '
        f'batch: {ids}). Training stopped. Lower the learning rate, add '
        'warm-up or gradient clipping (optim_wrapper.clip_grad), check '
        "these images' annotations, or set model.skip_nonfinite=True to "
        'skip such steps.')
    assert runner.iter == 1
    assert ('CheckInvalidLossHook(interval=50): the detector checks the loss '
            'of every iteration before its optimizer step; a NaN or infinite'
            ' loss stops the run with NonFiniteLossError.') in log_lines


@pytest.mark.usefixtures('one_thread')
def test_skip_nonfinite_still_decides(shapes, tmp_path):
    runner = _runner(shapes, tmp_path, nan_at=3, skip_nonfinite=True)
    log_lines = _capture(runner.logger)
    runner.train()
    assert runner.model.num_skipped_steps == 1 and runner.iter == 4
    assert any(line.endswith('a NaN or infinite loss skips the step and logs'
                             ' a warning (model.skip_nonfinite=True).')
               for line in log_lines)
    ckpt = torch.load(tmp_path / 'epoch_1.pth', weights_only=True)
    assert all(torch.isfinite(v).all() for v in ckpt['state_dict'].values()
               if v.is_floating_point())


class _FakeRunner:
    def __init__(self, model):
        self.model = model


class _NoGuardModel(BaseModel):
    def forward(self, *args, **kwargs):
        return {}


def test_a_model_or_wrapper_without_the_guard_is_refused():
    hook = CheckInvalidLossHook()
    with pytest.raises(TypeError, match='_NoGuardModel has no non-finite'):
        hook.before_train(_FakeRunner(_NoGuardModel()))
    # mmengine's own DDP wrapper never calls the detector's guard
    wrapper = MMDistributedDataParallel.__new__(MMDistributedDataParallel)
    with pytest.raises(TypeError, match='MMDistributedDataParallel does not'
                       ' apply'):
        hook.before_train(_FakeRunner(wrapper))
    with pytest.raises(ValueError, match='interval must be a positive int'):
        CheckInvalidLossHook(interval=0)
