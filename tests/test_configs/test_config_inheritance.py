"""Config files: `_base_` inheritance and `--cfg-options` overrides."""
import os.path as osp

from conftest import REPO_ROOT
from mmengine.config import Config, DictAction

CONFIG_DIR = osp.join(REPO_ROOT, 'configs')
RETINANET = osp.join(CONFIG_DIR, 'retinanet/retinanet_r50_fpn_1x_coco.py')


def test_retinanet_inherits_and_overrides_its_bases():
    cfg = Config.fromfile(RETINANET)
    assert cfg.default_scope == 'detkit'
    # schedule_1x says lr 0.02; the RetinaNet config overrides it to 0.01
    # and keeps the rest of the optimizer.
    assert cfg.optim_wrapper.optimizer == dict(
        type='SGD', lr=0.01, momentum=0.9, weight_decay=0.0001)
    warmup, steps = cfg.param_scheduler
    assert (warmup.type, warmup.start_factor, warmup.end) == ('LinearLR',
                                                              0.001, 500)
    assert (steps.type, steps.milestones, steps.gamma) == ('MultiStepLR',
                                                           [8, 11], 0.1)
    assert cfg.train_cfg.max_epochs == 12
    assert cfg.auto_scale_lr == dict(enable=False, base_batch_size=16)
    assert cfg.model.bbox_head.num_classes == 80
    assert cfg.model.train_cfg.assigner.neg_iou_thr == 0.4
    assert cfg.model.test_cfg.nms.iou_threshold == 0.5
    assert cfg.train_dataloader.batch_size == 2
    assert cfg.default_hooks.checkpoint.save_best == 'auto'


def test_cfg_options_override_nested_keys():
    cfg = Config.fromfile(RETINANET)
    # what `--cfg-options` parses into
    options = {}
    action = DictAction(option_strings=['--cfg-options'], dest='opts')

    class NS:
        pass

    ns = NS()
    action(None, ns, [
        'model.bbox_head.num_classes=3', 'optim_wrapper.optimizer.lr=0.005',
        'train_dataloader.batch_size=4', 'model.neck.in_channels=[1,2,3,4]'
    ])
    options = ns.opts
    cfg.merge_from_dict(options)
    assert cfg.model.bbox_head.num_classes == 3
    assert cfg.optim_wrapper.optimizer.lr == 0.005
    assert cfg.optim_wrapper.optimizer.momentum == 0.9
    assert cfg.train_dataloader.batch_size == 4
    assert cfg.model.neck.in_channels == [1, 2, 3, 4]

# Every config under configs/ builds, with each head's num_classes equal
# to its dataset's classes: tests/test_configs/test_mmdet_config_compat.py
# (test_every_detkit_config_builds).
