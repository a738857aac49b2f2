"""A short real run: a small Faster R-CNN trains on BCCD through the runner,
its losses decrease and validation gives a finite COCO mAP; the trained RPN
weights then load into an RPN detector (rpn_head.* -> bbox_head.*), whose
proposals give a finite average recall."""
import math

import pytest
import torch
from conftest import REPO_ROOT
from pytest import approx
from mmengine.config import Config
from mmengine.hooks import Hook

from detkit.engine import DetRunner
from detkit.registry import HOOKS

FASTER = f'{REPO_ROOT}/configs/faster_rcnn/faster-rcnn_r50_fpn_1x_coco.py'
RPN = f'{REPO_ROOT}/configs/rpn/rpn_r50_fpn_1x_coco.py'
CLASSES = ('RBC', 'WBC', 'Platelets')
LOSSES = []


@HOOKS.register_module(force=True)
class _RecordTwoStageLossHook(Hook):

    def after_train_iter(self, runner, batch_idx, data_batch=None,
                         outputs=None):
        LOSSES.append({k: float(v.detach()) for k, v in outputs.items()})


def small_cfg(config, bccd_dir, work_dir, two_stage=True):
    cfg = Config.fromfile(config)
    options = {
        'model.backbone.depth': 18,
        'model.backbone.init_cfg': None,
        'model.backbone.frozen_stages': -1,
        'model.neck.in_channels': [64, 128, 256, 512],
        'model.neck.out_channels': 32,
        'model.rpn_head.in_channels': 32,
        'model.rpn_head.feat_channels': 32,
    }
    if two_stage:
        options.update({
            'model.roi_head.bbox_roi_extractor.out_channels': 32,
            'model.roi_head.bbox_head.in_channels': 32,
            'model.roi_head.bbox_head.fc_out_channels': 128,
            'model.roi_head.bbox_head.num_classes': len(CLASSES),
            'model.train_cfg.rpn_proposal.nms_pre': 500,
            'model.train_cfg.rpn_proposal.max_per_img': 300,
            'model.test_cfg.rpn.max_per_img': 300,
        })
    cfg.merge_from_dict(options)
    for split, ann in (('train', 'train.json'), ('val', 'val.json')):
        loader = cfg[f'{split}_dataloader']
        loader.num_workers = 0
        loader.persistent_workers = False
        loader.batch_size = 2
        ds = loader.dataset
        ds.data_root = bccd_dir
        ds.ann_file = ann
        ds.data_prefix = dict(img='images/')
        ds.metainfo = dict(classes=CLASSES)
        ds.indices = 4
        for step in ds.pipeline:  # 640x480 -> 256x192 keeps the run short
            if step['type'] == 'Resize':
                step['scale'] = (256, 192)
            if step['type'] == 'RandomFlip':
                step['prob'] = 0.0
    if two_stage:
        cfg.val_evaluator = dict(type='CocoMetric', metric='bbox')
    else:  # greedy-matching recall and pycocotools' proposal AR
        cfg.val_evaluator = [
            dict(type='CocoMetric', metric='proposal_fast'),
            dict(type='CocoMetric', metric='proposal', prefix='pycoco')
        ]
    cfg.test_dataloader = cfg.val_dataloader
    cfg.test_evaluator = cfg.val_evaluator
    # validation runs once, after the last epoch
    cfg.train_cfg = dict(type='EpochBasedTrainLoop', max_epochs=6,
                         val_interval=6)
    cfg.optim_wrapper.optimizer.lr = 0.02
    cfg.param_scheduler = []
    cfg.default_hooks.logger.interval = 1
    cfg.default_hooks.checkpoint.interval = 6
    cfg.default_hooks.visualization = dict(type='DetVisualizationHook')
    cfg.custom_hooks = list(cfg.custom_hooks) + [
        dict(type='_RecordTwoStageLossHook')
    ]
    cfg.work_dir = work_dir
    cfg.randomness = dict(seed=0)
    cfg.experiment_name = 'two_stage_bccd_integration'
    return cfg


@pytest.fixture
def one_thread():
    # On the shared 2-core CI machine, intra-op threads mostly wait for each
    # other; one thread is several times faster for these small tensors.
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def test_faster_rcnn_trains_and_rpn_recalls_on_bccd(bccd_dir, tmp_path,
                                                    one_thread):
    LOSSES.clear()
    runner = DetRunner.from_cfg(
        small_cfg(FASTER, bccd_dir, str(tmp_path / 'frcnn')))
    runner.train()
    assert len(LOSSES) == 12  # 6 epochs x 2 iterations
    assert all(math.isfinite(v) for l in LOSSES for v in l.values())
    assert set(LOSSES[0]) >= {'loss', 'loss_rpn_cls', 'loss_rpn_bbox',
                              'loss_cls', 'acc', 'loss_bbox'}

    def mean(key, part):
        return sum(l[key] for l in part) / len(part)

    # the RoI classifier learns fastest (most RoIs are background); the RPN,
    # initialised at std 0.01, moves off ln 2 steadily
    assert mean('loss', LOSSES[-2:]) < 0.85 * mean('loss', LOSSES[:2])
    assert mean('loss_cls', LOSSES[-2:]) < 0.6 * mean('loss_cls', LOSSES[:2])
    assert mean('loss_rpn_cls', LOSSES[:2]) == approx(math.log(2), abs=2e-3)
    assert mean('loss_rpn_cls', LOSSES[-2:]) < math.log(2) - 0.02
    for key in ('coco/bbox_mAP', 'coco/bbox_mAP_50'):
        value = runner.message_hub.get_scalar(f'val/{key}').current()
        assert 0.0 <= value <= 1.0, (key, value)
    ckpt = tmp_path / 'frcnn' / 'epoch_6.pth'
    assert ckpt.exists()

    rpn_cfg = small_cfg(RPN, bccd_dir, str(tmp_path / 'rpn'),
                        two_stage=False)
    rpn_cfg.load_from = str(ckpt)
    rpn_runner = DetRunner.from_cfg(rpn_cfg)
    metrics = rpn_runner.test()
    head = rpn_runner.model.bbox_head
    trained = runner.model.rpn_head
    assert (head.rpn_cls.weight == trained.rpn_cls.weight).all()
    for prefix in ('coco', 'pycoco'):
        recalls = [metrics[f'{prefix}/AR@{n}'] for n in (100, 300, 1000)]
        assert all(0.0 <= r <= 1.0 for r in recalls), metrics
        assert recalls[0] <= recalls[1] <= recalls[2]
