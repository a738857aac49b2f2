"""A short real run: RetinaNet trains on BCCD through the runner, the loss
decreases, and validation gives a finite COCO mAP."""
import math

from conftest import REPO_ROOT
from mmengine.config import Config
from mmengine.hooks import Hook

from detkit.engine import DetRunner
from detkit.registry import HOOKS

CONFIG = f'{REPO_ROOT}/configs/retinanet/retinanet_r50_fpn_1x_coco.py'
LOSSES = []


@HOOKS.register_module(force=True)
class _RecordLossHook(Hook):

    def after_train_iter(self, runner, batch_idx, data_batch=None,
                         outputs=None):
        LOSSES.append({k: float(v.detach()) for k, v in outputs.items()})


def bccd_cfg(bccd_dir, work_dir):
    cfg = Config.fromfile(CONFIG)
    small_model = {
        'model.backbone.depth': 18,
        'model.backbone.init_cfg': None,
        'model.backbone.frozen_stages': -1,
        'model.neck.in_channels': [64, 128, 256, 512],
        'model.neck.out_channels': 32,
        'model.bbox_head.in_channels': 32,
        'model.bbox_head.feat_channels': 32,
        'model.bbox_head.stacked_convs': 1,
        'model.bbox_head.num_classes': 3,
    }
    cfg.merge_from_dict(small_model)
    classes = ('RBC', 'WBC', 'Platelets')
    for split, ann, n in (('train', 'train.json', 4), ('val', 'val.json', 4)):
        loader = cfg[f'{split}_dataloader']
        loader.num_workers = 0
        loader.persistent_workers = False
        loader.batch_size = 2
        ds = loader.dataset
        ds.data_root = bccd_dir
        ds.ann_file = ann
        ds.data_prefix = dict(img='images/')
        ds.metainfo = dict(classes=classes)
        ds.indices = n
        # 640x480 -> 320x240 keeps the run short
        for step in ds.pipeline:
            if step['type'] == 'Resize':
                step['scale'] = (320, 240)
            if step['type'] == 'RandomFlip':
                step['prob'] = 0.0
    cfg.val_evaluator = dict(type='CocoMetric', metric='bbox')
    cfg.test_dataloader = cfg.val_dataloader
    cfg.test_evaluator = cfg.val_evaluator
    cfg.train_cfg = dict(type='EpochBasedTrainLoop', max_epochs=6,
                         val_interval=6)
    # AdamW moves a from-scratch model visibly within a dozen steps.
    cfg.optim_wrapper.optimizer = dict(type='AdamW', lr=1e-3,
                                       weight_decay=0.0)
    cfg.param_scheduler = []
    cfg.default_hooks.logger.interval = 1
    cfg.default_hooks.checkpoint.interval = 6
    cfg.custom_hooks = list(cfg.custom_hooks) + [dict(type='_RecordLossHook')]
    cfg.work_dir = work_dir
    cfg.randomness = dict(seed=0)
    cfg.experiment_name = 'retinanet_bccd_integration'
    return cfg


def test_retinanet_trains_and_evaluates_on_bccd(bccd_dir, tmp_path):
    LOSSES.clear()
    runner = DetRunner.from_cfg(bccd_cfg(bccd_dir, str(tmp_path)))
    runner.train()
    assert len(LOSSES) == 12  # 6 epochs x 2 iterations
    assert all(math.isfinite(l['loss']) for l in LOSSES)
    first = sum(l['loss'] for l in LOSSES[:2]) / 2
    last = sum(l['loss'] for l in LOSSES[-2:]) / 2
    assert last < 0.8 * first, (first, last)
    metrics = runner.val_loop.run()
    assert set(metrics) >= {'coco/bbox_mAP', 'coco/bbox_mAP_50'}
    assert 0.0 <= metrics['coco/bbox_mAP'] <= 1.0
    assert (tmp_path / 'epoch_6.pth').exists()
