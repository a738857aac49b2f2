"""A tiny RetinaNet, a tiny COCO dataset and a checkpoint for the tool and
API tests, made in seconds on a CPU.

- :func:`make_shapes` writes detkit's synthetic shapes (64x64 images).
- :func:`tiny_cfg` is a complete runner config: ResNet-18 at 8 base
  channels, a 16-channel FPN (strides 8..64), a one-conv RetinaHead.
- :func:`make_checkpoint` saves that model with a re-initialised head
  (Kaiming weights, classification bias 0), so scores spread over (0, 1)
  and predictions are never empty.
- ``tiny_setup`` (a session fixture; import it into a test module) makes
  all three once.

Tests elsewhere than tests/test_tools put this folder on ``sys.path``.
"""
import os.path as osp
import runpy

import pytest
import torch
from mmengine.config import Config
from mmengine.registry import DefaultScope

from detkit.datasets.synthetic_shapes import (SHAPES_CLASSES,
                                              generate_shapes_dataset)
from detkit.engine import save_checkpoint_file
from detkit.registry import MODELS

REPO_ROOT = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
IMG_SIZE = 64


def run_tool(*parts, run_name=None):
    """The globals of ``tools/<parts>`` (or ``demo/...``) loaded as a
    module, so that tests call its ``main(argv)`` in-process."""
    path = osp.join(REPO_ROOT, *parts)
    return runpy.run_path(path, run_name=run_name or 'detkit_' +
                          osp.splitext(parts[-1])[0])


def make_shapes(root, num_train=4, num_val=3, seed=0):
    """Synthetic shapes (lossless PNG) under ``root``; returns the
    generator's paths."""
    return generate_shapes_dataset(
        str(root), num_train=num_train, num_val=num_val, img_size=IMG_SIZE,
        seed=seed, max_objects=2, min_obj_size=12, max_obj_frac=0.5,
        img_format='png')


_SETUP = {}


@pytest.fixture(scope='session')
def tiny_setup(tmp_path_factory):
    """Shapes, the tiny config written to a file and a checkpoint, made
    once per test session: dict with ``root``, ``data_root``, ``img_dir``,
    ``cfg`` (dict), ``cfg_file``, ``ckpt``."""
    if not _SETUP:
        root = tmp_path_factory.mktemp('toolbox')
        paths = make_shapes(root / 'shapes')
        cfg = tiny_cfg(paths['data_root'], work_dir=root / 'work')
        _SETUP.update(
            root=root, data_root=paths['data_root'],
            img_dir=paths['img_dir'], cfg=cfg,
            cfg_file=write_cfg(cfg, root / 'tiny_retinanet.py'),
            ckpt=str(root / 'tiny_retinanet.pth'))
        make_checkpoint(cfg, _SETUP['ckpt'])
    return dict(_SETUP)


def tiny_model_cfg(num_classes=len(SHAPES_CLASSES), max_per_img=10):
    return dict(
        type='RetinaNet',
        data_preprocessor=dict(
            type='DetDataPreprocessor',
            mean=[123.675, 116.28, 103.53],
            std=[58.395, 57.12, 57.375],
            bgr_to_rgb=True,
            pad_size_divisor=32),
        backbone=dict(
            type='ResNet', depth=18, base_channels=8, num_stages=4,
            out_indices=(1, 2, 3), frozen_stages=-1,
            norm_cfg=dict(type='BN', requires_grad=True), norm_eval=False,
            style='pytorch', init_cfg=None),
        neck=dict(
            type='FPN', in_channels=[16, 32, 64], out_channels=16,
            start_level=0, add_extra_convs='on_output', num_outs=4),
        bbox_head=dict(
            type='RetinaHead',
            num_classes=num_classes,
            in_channels=16,
            stacked_convs=1,
            feat_channels=16,
            anchor_generator=dict(
                type='AnchorGenerator', octave_base_scale=2,
                scales_per_octave=1, ratios=[1.0], strides=[8, 16, 32, 64]),
            bbox_coder=dict(type='DeltaXYWHBBoxCoder',
                            target_means=[.0, .0, .0, .0],
                            target_stds=[1.0, 1.0, 1.0, 1.0]),
            loss_cls=dict(type='FocalLoss', use_sigmoid=True, gamma=2.0,
                          alpha=0.25, loss_weight=1.0),
            loss_bbox=dict(type='L1Loss', loss_weight=1.0)),
        train_cfg=dict(
            assigner=dict(type='MaxIoUAssigner', pos_iou_thr=0.5,
                          neg_iou_thr=0.4, min_pos_iou=0, ignore_iof_thr=-1),
            sampler=dict(type='PseudoSampler'), allowed_border=-1,
            pos_weight=-1),
        test_cfg=dict(nms_pre=100, min_bbox_size=0, score_thr=0.05,
                      nms=dict(type='nms', iou_threshold=0.5),
                      max_per_img=max_per_img))


def tiny_cfg(data_root, work_dir=None, **model_kw):
    """A complete config over the shapes written by :func:`make_shapes`."""
    data_root = str(data_root) + '/'
    dataset = dict(type='CocoDataset', data_root=data_root,
                   metainfo=dict(classes=SHAPES_CLASSES),
                   data_prefix=dict(img='images/'))
    train_pipeline = [
        dict(type='LoadImageFromFile'),
        dict(type='LoadAnnotations', with_bbox=True),
        dict(type='Resize', scale=(IMG_SIZE, IMG_SIZE), keep_ratio=True),
        dict(type='PackDetInputs')
    ]
    test_pipeline = [
        dict(type='LoadImageFromFile'),
        dict(type='Resize', scale=(IMG_SIZE, IMG_SIZE), keep_ratio=True),
        dict(type='LoadAnnotations', with_bbox=True),
        dict(type='PackDetInputs',
             meta_keys=('img_id', 'img_path', 'ori_shape', 'img_shape',
                        'scale_factor'))
    ]
    val_dataloader = dict(
        batch_size=2, num_workers=0, persistent_workers=False,
        drop_last=False, sampler=dict(type='DefaultSampler', shuffle=False),
        dataset=dict(dataset, ann_file='annotations/val.json',
                     test_mode=True, pipeline=test_pipeline))
    evaluator = dict(type='CocoMetric',
                     ann_file=data_root + 'annotations/val.json',
                     metric='bbox')
    cfg = dict(
        default_scope='detkit',
        model=tiny_model_cfg(**model_kw),
        train_dataloader=dict(
            batch_size=2, num_workers=0, persistent_workers=False,
            sampler=dict(type='DefaultSampler', shuffle=False),
            dataset=dict(dataset, ann_file='annotations/train.json',
                         filter_cfg=dict(filter_empty_gt=True, min_size=0),
                         pipeline=train_pipeline)),
        val_dataloader=val_dataloader,
        test_dataloader=val_dataloader,
        val_evaluator=evaluator,
        test_evaluator=evaluator,
        train_cfg=dict(type='EpochBasedTrainLoop', max_epochs=1,
                       val_interval=1),
        val_cfg=dict(type='ValLoop'),
        test_cfg=dict(type='TestLoop'),
        optim_wrapper=dict(type='OptimWrapper',
                           optimizer=dict(type='SGD', lr=0.001,
                                          momentum=0.9)),
        default_hooks=dict(
            timer=dict(type='IterTimerHook'),
            logger=dict(type='LoggerHook', interval=1),
            param_scheduler=dict(type='ParamSchedulerHook'),
            checkpoint=dict(type='CheckpointHook', interval=1),
            sampler_seed=dict(type='DistSamplerSeedHook'),
            visualization=dict(type='DetVisualizationHook')),
        env_cfg=dict(cudnn_benchmark=False,
                     dist_cfg=dict(backend='gloo')),
        vis_backends=[dict(type='LocalVisBackend')],
        visualizer=dict(type='DetLocalVisualizer',
                        vis_backends=[dict(type='LocalVisBackend')],
                        name='visualizer'),
        log_processor=dict(type='LogProcessor', window_size=1, by_epoch=True),
        log_level='WARNING',
        load_from=None,
        resume=False)
    if work_dir is not None:
        cfg['work_dir'] = str(work_dir)
    return cfg


def write_cfg(cfg, path):
    Config(cfg).dump(str(path))
    return str(path)


def build_tiny_model(cfg):
    with DefaultScope.overwrite_default_scope('detkit'):
        model = MODELS.build(Config(cfg).model)
    model.init_weights()
    return model


def make_checkpoint(cfg, path, seed=0):
    """Save the tiny model (seeded init, head as described above) with
    dataset meta and config; returns the model in eval mode."""
    torch.manual_seed(seed)
    model = build_tiny_model(cfg)
    with torch.no_grad():
        # Head activations of order 1: scores spread over (0, 1), so that
        # rankings never hang on float rounding.
        for module in model.bbox_head.modules():
            if isinstance(module, torch.nn.Conv2d):
                torch.nn.init.kaiming_normal_(module.weight)
        model.bbox_head.retina_cls.bias.zero_()
    save_checkpoint_file(
        dict(meta=dict(dataset_meta=dict(classes=SHAPES_CLASSES),
                       cfg=Config(cfg).pretty_text),
             state_dict=model.state_dict()), str(path))
    return model.eval()
