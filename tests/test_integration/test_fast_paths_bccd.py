"""The fast default paths give the results of the exact ones, on real BCCD
images with a briefly trained RetinaNet (R-18, 32-channel FPN and head):

- channels-last (the default of training, validation, ``tools/test.py``
  and ``init_detector``) against NCHW (``channels_last=False``,
  ``--no-channels-last``; mmdetection's arithmetic): the same COCO mAP to
  3 decimals, detections within float rounding, training losses within
  1e-5 relative over the first iterations;
- onnxruntime running the exported graph against PyTorch: COCO mAP within
  0.001.

The model trains for 16 epochs on 8 training images (320x240, AdamW) and
is evaluated on the same 8 images, where it reaches a mAP of a few
hundredths: small, but not zero, so that a difference would show.
"""
import math
import os.path as osp
import pickle
import runpy

import pytest
import torch
from mmengine.hooks import Hook

from conftest import REPO_ROOT, require_shared
from detkit.engine import DetRunner
from detkit.registry import HOOKS, METRICS

TEST = runpy.run_path(osp.join(REPO_ROOT, 'tools', 'test.py'),
                      run_name='detkit_tools_test_fast_paths')
CLASSES = ('RBC', 'WBC', 'Platelets')
LOSSES = []


@HOOKS.register_module(force=True)
class _FastPathLossHook(Hook):

    def after_train_iter(self, runner, batch_idx, data_batch=None,
                         outputs=None):
        LOSSES.append({k: float(v.detach()) for k, v in outputs.items()})


def _cfg(work_dir, epochs=16, num_images=8, **extra):
    from mmengine.config import Config
    data_root = require_shared('data', 'bccd') + '/'
    cfg = Config.fromfile(
        f'{REPO_ROOT}/configs/retinanet/retinanet_r50_fpn_1x_coco.py')
    cfg.merge_from_dict({
        'model.backbone.depth': 18,
        'model.backbone.init_cfg': None,
        'model.backbone.frozen_stages': -1,
        'model.neck.in_channels': [64, 128, 256, 512],
        'model.neck.out_channels': 32,
        'model.bbox_head.in_channels': 32,
        'model.bbox_head.feat_channels': 32,
        'model.bbox_head.stacked_convs': 1,
        'model.bbox_head.num_classes': 3,
    })
    for split in ('train', 'val'):
        loader = cfg[f'{split}_dataloader']
        loader.update(num_workers=0, persistent_workers=False, batch_size=2)
        loader.dataset.update(
            data_root=data_root, ann_file='train.json',
            data_prefix=dict(img='images/'),
            metainfo=dict(classes=CLASSES), indices=num_images)
        for step in loader.dataset.pipeline:
            if step['type'] == 'Resize':
                step['scale'] = (320, 240)
    cfg.val_evaluator = dict(type='CocoMetric', metric='bbox',
                             ann_file=data_root + 'train.json')
    cfg.test_dataloader = cfg.val_dataloader
    cfg.test_evaluator = cfg.val_evaluator
    cfg.train_cfg = dict(type='EpochBasedTrainLoop', max_epochs=epochs,
                         val_interval=epochs)
    cfg.optim_wrapper.optimizer = dict(type='AdamW', lr=1e-3,
                                       weight_decay=0.0)
    cfg.param_scheduler = []
    cfg.default_hooks.logger.interval = 1
    cfg.default_hooks.checkpoint = dict(type='CheckpointHook',
                                        interval=epochs, save_best=None)
    cfg.custom_hooks = [dict(type='_FastPathLossHook')]
    cfg.work_dir = work_dir
    cfg.randomness = dict(seed=0)
    cfg.merge_from_dict(extra)
    return cfg


@pytest.fixture(scope='module')
def trained(tmp_path_factory):
    """The config file and checkpoint of the briefly trained model, and
    the metrics of the validation at the end of its (channels-last)
    training."""
    root = tmp_path_factory.mktemp('fast_paths')
    cfg = _cfg(str(root / 'train'))
    runner = DetRunner.from_cfg(cfg)
    runner.train()
    metrics = {k: v for k, v in runner.message_hub.log_scalars.items()
               if k.startswith('val/coco/')}
    cfg_file = str(root / 'bccd_retinanet_r18.py')
    cfg.dump(cfg_file)
    return dict(root=root, cfg_file=cfg_file,
                ckpt=str(root / 'train' / 'epoch_16.pth'),
                val_map=float(metrics['val/coco/bbox_mAP'].current()))


def _test_run(trained, name, *flags):
    out = str(trained['root'] / f'{name}.pkl')
    metrics = TEST['main']([
        trained['cfg_file'], trained['ckpt'], '--out', out, '--work-dir',
        str(trained['root'] / name), *flags
    ])
    with open(out, 'rb') as f:
        return metrics, pickle.load(f)


def test_channels_last_gives_nchw_map_and_detections(trained):
    nchw, nchw_preds = _test_run(trained, 'nchw', '--no-channels-last')
    default, default_preds = _test_run(trained, 'default')
    assert nchw['coco/bbox_mAP'] > 0.005  # the model learned something
    assert set(default) == set(nchw)
    for key in nchw:
        assert round(default[key], 3) == round(nchw[key], 3), key
    # Validation during training ran channels-last too.
    assert round(trained['val_map'], 3) == round(nchw['coco/bbox_mAP'], 3)
    compared = 0
    for a, b in zip(default_preds, nchw_preds):
        a, b = a['pred_instances'], b['pred_instances']
        assert torch.equal(a['labels'], b['labels'])
        # Convolutions summed in another order: float32 rounding.
        torch.testing.assert_close(a['scores'], b['scores'], rtol=0,
                                   atol=1e-5)
        torch.testing.assert_close(a['bboxes'], b['bboxes'], rtol=0,
                                   atol=1e-3)
        compared += len(b['scores'])
    assert compared > 100


def test_channels_last_training_keeps_the_losses(tmp_path):
    """Four iterations in either layout from the same seed: the same
    initial weights (DetRunner initialises in NCHW: random initialisers
    fill memory in storage order), and losses that agree to 1e-5 relative
    (measured: 2e-7; the foreach optimizer step is bitwise the update of
    the per-parameter loop, tests/test_engine/test_speedups.py)."""
    runs = {}
    for name, channels_last in (('cl', True), ('nchw', False)):
        LOSSES.clear()
        cfg = _cfg(str(tmp_path / name), epochs=2, num_images=4,
                   channels_last=channels_last)
        cfg.val_cfg = cfg.val_dataloader = cfg.val_evaluator = None
        cfg.default_hooks.checkpoint = None
        DetRunner.from_cfg(cfg).train()
        runs[name] = list(LOSSES)
    assert len(runs['cl']) == len(runs['nchw']) == 4
    for a, b in zip(runs['cl'], runs['nchw']):
        for key in ('loss_cls', 'loss_bbox'):
            assert math.isclose(a[key], b[key], rel_tol=1e-5), (key, a, b)


def _coco_map(cfg, predict):
    """COCO metrics of ``predict(batch) -> data samples`` over the
    config's test loader."""
    from mmengine.registry import DefaultScope
    from mmengine.runner import Runner
    with DefaultScope.overwrite_default_scope('detkit'):
        loader = Runner.build_dataloader(cfg.test_dataloader)
        metric = METRICS.build(cfg.test_evaluator)
    metric.dataset_meta = dict(classes=CLASSES)
    for batch in loader:
        samples = predict(batch)
        metric.process(batch, [s.to_dict() for s in samples])
    return metric.evaluate(len(loader.dataset))


def test_onnxruntime_map_equals_pytorch(trained):
    pytest.importorskip('onnxruntime', reason='onnxruntime is optional '
                        '(requirements/optional.txt)')
    from mmengine.config import Config
    tool = runpy.run_path(
        osp.join(REPO_ROOT, 'tools', 'analysis_tools', 'benchmark.py'),
        run_name='detkit_benchmark_fast_paths')
    cfg = Config.fromfile(trained['cfg_file'])
    cfg.test_dataloader.batch_size = 1
    model, detector = tool['_ort_detector'](cfg, trained['ckpt'], threads=2)

    def pytorch(batch):
        with torch.no_grad():
            return model.test_step(batch)

    expected = _coco_map(cfg, pytorch)
    got = _coco_map(cfg, detector.test_step)
    assert expected['coco/bbox_mAP'] > 0.005
    for key in expected:
        assert abs(got[key] - expected[key]) <= 1e-3, key
