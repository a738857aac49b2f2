"""Short real runs: FCOS and ATSS train from scratch on 4 BCCD images
through the runner; the loss falls and the COCO mAP on those images rises
from the first validation to the last (the full runs are
benchmarks/train_fcos_bccd.py and train_atss_bccd.py)."""
import math

import pytest
from conftest import REPO_ROOT
from mmengine.config import Config
from mmengine.hooks import Hook

from detkit.engine import DetRunner
from detkit.registry import HOOKS

CONFIGS = {
    'fcos': 'configs/fcos/fcos_r50-caffe_fpn_gn-head-center-normbbox-'
            'centeronreg-giou_1x_coco.py',
    'atss': 'configs/atss/atss_r50_fpn_1x_coco.py',
}
RECORD = dict(losses=[], maps=[])


@HOOKS.register_module(force=True)
class _RecordFcosAtssHook(Hook):

    def after_train_iter(self, runner, batch_idx, data_batch=None,
                         outputs=None):
        RECORD['losses'].append({k: float(v.detach())
                                 for k, v in outputs.items()})

    def after_val_epoch(self, runner, metrics=None):
        RECORD['maps'].append(metrics['coco/bbox_mAP_50'])


def bccd_cfg(name, bccd_dir, work_dir, epochs):
    cfg = Config.fromfile(f'{REPO_ROOT}/{CONFIGS[name]}')
    cfg.merge_from_dict({
        # from scratch: RGB mean/std, trainable BN, no pretrained weights
        'model.data_preprocessor.mean': [123.675, 116.28, 103.53],
        'model.data_preprocessor.std': [58.395, 57.12, 57.375],
        'model.data_preprocessor.bgr_to_rgb': True,
        'model.backbone.depth': 18,
        'model.backbone.base_channels': 16,
        'model.backbone.style': 'pytorch',
        'model.backbone.norm_cfg': dict(type='BN', requires_grad=True),
        'model.backbone.norm_eval': False,
        'model.backbone.frozen_stages': -1,
        'model.backbone.init_cfg': None,
        'model.neck.in_channels': [16, 32, 64, 128],
        'model.neck.out_channels': 32,
        'model.bbox_head.in_channels': 32,
        'model.bbox_head.feat_channels': 32,
        'model.bbox_head.stacked_convs': 1,
        'model.bbox_head.norm_cfg': dict(type='GN', num_groups=8,
                                         requires_grad=True),
        'model.bbox_head.num_classes': 3,
    })
    classes = ('RBC', 'WBC', 'Platelets')
    for split in ('train', 'val'):
        loader = cfg[f'{split}_dataloader']
        loader.num_workers = 0
        loader.persistent_workers = False
        loader.batch_size = 2
        ds = loader.dataset
        ds.data_root = bccd_dir
        ds.ann_file = 'train.json'  # validate on the training images
        ds.data_prefix = dict(img='images/')
        ds.metainfo = dict(classes=classes)
        ds.indices = 4
        for step in ds.pipeline:
            if step['type'] == 'Resize':
                step['scale'] = (320, 240)
            if step['type'] == 'RandomFlip':
                step['prob'] = 0.0
    cfg.val_evaluator = dict(type='CocoMetric', metric='bbox',
                             ann_file=f'{bccd_dir}/train.json')
    cfg.test_dataloader = cfg.val_dataloader
    cfg.test_evaluator = cfg.val_evaluator
    cfg.train_cfg = dict(type='EpochBasedTrainLoop', max_epochs=epochs,
                         val_interval=1)
    cfg.optim_wrapper = dict(type='OptimWrapper',
                             optimizer=dict(type='AdamW', lr=1e-3,
                                            weight_decay=0.0),
                             clip_grad=dict(max_norm=10, norm_type=2))
    cfg.param_scheduler = []
    cfg.default_hooks.logger.interval = 1
    cfg.default_hooks.checkpoint.interval = epochs
    cfg.custom_hooks = list(cfg.custom_hooks) + [
        dict(type='_RecordFcosAtssHook')
    ]
    cfg.work_dir = work_dir
    cfg.randomness = dict(seed=0)
    cfg.experiment_name = f'{name}_bccd_integration'
    return cfg


@pytest.mark.parametrize('name', ['fcos', 'atss'])
def test_trains_and_its_map_rises_on_bccd(name, bccd_dir, tmp_path):
    RECORD['losses'].clear()
    RECORD['maps'].clear()
    epochs = 12  # of 2 iterations: about 10 s on 2 CPU cores
    runner = DetRunner.from_cfg(bccd_cfg(name, bccd_dir, str(tmp_path),
                                         epochs))
    runner.train()
    losses = RECORD['losses']
    assert len(losses) == 2 * epochs
    assert set(losses[0]) >= {'loss', 'loss_cls', 'loss_bbox',
                              'loss_centerness'}
    assert all(math.isfinite(l['loss']) for l in losses)
    first = sum(l['loss'] for l in losses[:2]) / 2
    last = sum(l['loss'] for l in losses[-2:]) / 2
    assert last < 0.7 * first, (first, last)
    # mAP_50 on the 4 images: 0 after the first epoch, about 0.4 (FCOS)
    # and 0.5 (ATSS) after the last
    maps = RECORD['maps']
    assert len(maps) == epochs
    assert maps[-1] > maps[0] + 0.2, maps
    assert (tmp_path / f'epoch_{epochs}.pth').exists()
