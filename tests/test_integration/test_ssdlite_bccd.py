"""A short real run: SSDLite (the mmdetection config, 3 classes) trains on
BCCD through the runner, the loss decreases, and the test pipeline
evaluates it with a finite COCO mAP."""
import math

import pytest
from mmengine.config import Config
from mmengine.hooks import Hook

from conftest import REPO_ROOT
from detkit.engine import DetRunner
from detkit.registry import HOOKS

CONFIG = (f'{REPO_ROOT}/configs/ssd/'
          'ssdlite_mobilenetv2-scratch_8xb24-600e_coco.py')
LOSSES = []
EPOCHS, IMAGES, SIZE = 10, 4, 160


@HOOKS.register_module(force=True)
class _RecordSSDLossHook(Hook):

    def after_train_iter(self, runner, batch_idx, data_batch=None,
                         outputs=None):
        LOSSES.append({k: float(v.detach()) for k, v in outputs.items()})


def bccd_cfg(bccd_dir, work_dir):
    """The SSDLite config on 4 BCCD images at 160x160 (half its 320, for
    time), one batch per epoch. Expand and MinIoURandomCrop are left out:
    they re-zoom every box at every step, so a 10-step loss curve would
    measure the augmentation rather than the learning; Resize (no keep
    ratio), RandomFlip and PhotoMetricDistortion stay."""
    cfg = Config.fromfile(CONFIG)
    cfg.model.bbox_head.num_classes = 3
    classes = ('RBC', 'WBC', 'Platelets')
    cfg.train_dataloader.dataset.times = 1
    train = cfg.train_dataloader.dataset.dataset
    train.pipeline = [
        step for step in train.pipeline
        if step['type'] not in ('Expand', 'MinIoURandomCrop')
    ]
    for split, ds in (('train', train), ('val',
                                         cfg.val_dataloader.dataset)):
        ds.update(data_root=bccd_dir, ann_file=f'{split}.json',
                  data_prefix=dict(img='images/'),
                  metainfo=dict(classes=classes), indices=IMAGES)
        for step in ds.pipeline:
            if step['type'] == 'Resize':
                step['scale'] = (SIZE, SIZE)
        loader = cfg[f'{split}_dataloader']
        loader.update(num_workers=0, persistent_workers=False,
                      batch_size=IMAGES)
    cfg.val_evaluator = dict(type='CocoMetric', metric='bbox')
    cfg.test_dataloader = cfg.val_dataloader
    cfg.test_evaluator = cfg.val_evaluator
    cfg.train_cfg = dict(type='EpochBasedTrainLoop', max_epochs=EPOCHS,
                         val_interval=EPOCHS)
    cfg.optim_wrapper.optimizer.lr = 0.05
    cfg.param_scheduler = []  # no 500-iteration warm-up in a 10-step run
    cfg.default_hooks.logger.interval = 1
    cfg.default_hooks.checkpoint.interval = EPOCHS
    cfg.custom_hooks = list(cfg.custom_hooks) + [
        dict(type='_RecordSSDLossHook')
    ]
    cfg.work_dir = work_dir
    cfg.randomness = dict(seed=0)
    cfg.experiment_name = 'ssdlite_bccd_integration'
    return cfg


def test_ssdlite_trains_and_evaluates_on_bccd(bccd_dir, tmp_path):
    LOSSES.clear()
    runner = DetRunner.from_cfg(bccd_cfg(bccd_dir, str(tmp_path)))
    runner.train()
    assert len(LOSSES) == EPOCHS  # one batch of 4 images per epoch
    for step in LOSSES:
        assert math.isfinite(step['loss'])
        assert step['loss'] == pytest.approx(
            step['loss_cls'] + step['loss_bbox'], rel=1e-5)
    # At the start every logit is ~0: each positive and each of its 3
    # hard negatives costs ln(4), so loss_cls = 4 ln 4 = 5.545.
    assert LOSSES[0]['loss_cls'] == pytest.approx(4 * math.log(4), abs=0.02)

    def mean(key, steps):
        return sum(s[key] for s in steps) / len(steps)

    assert mean('loss', LOSSES[-2:]) < 0.9 * mean('loss', LOSSES[:2])
    assert mean('loss_bbox', LOSSES[-2:]) < 0.8 * mean(
        'loss_bbox', LOSSES[:2])
    metrics = runner.val_loop.run()
    assert set(metrics) >= {'coco/bbox_mAP', 'coco/bbox_mAP_50'}
    assert 0.0 <= metrics['coco/bbox_mAP'] <= 1.0
    assert (tmp_path / f'epoch_{EPOCHS}.pth').exists()
