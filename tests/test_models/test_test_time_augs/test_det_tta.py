"""Test-time augmentation: TestTimeAug's views, un-flipping, and a flip-TTA
RetinaNet whose head outputs are set by hand, merged by DetTTAModel."""
import math

import numpy as np
import pytest
import torch
from mmengine.config import Config
from mmengine.dataset import pseudo_collate
from mmengine.registry import DefaultScope
from mmengine.structures import InstanceData

from detkit.datasets.transforms import TestTimeAug as TTAug
from detkit.models.test_time_augs import (DetTTAModel,
                                          default_flip_tta_pipeline,
                                          enable_tta, merge_aug_bboxes)
from detkit.registry import MODELS
from detkit.structures import DetDataSample

META_KEYS = ('img_id', 'img_path', 'ori_shape', 'img_shape', 'scale_factor',
             'flip', 'flip_direction')


def _image(h=32, w=64):
    """A horizontally symmetric BGR image (its mirror is itself)."""
    rng = np.random.default_rng(0)
    half = rng.integers(0, 255, (h, w // 2, 3), dtype=np.uint8)
    img = np.concatenate([half, half[:, ::-1]], axis=1)
    assert np.array_equal(img, img[:, ::-1])
    return img


# ----------------------------------------------------------- TestTimeAug
def test_views_are_the_product_of_the_groups_first_slowest():
    def tag(name):
        return lambda r: dict(r, trail=r['trail'] + [name])

    tta = TTAug([[tag('s1'), tag('s2'), tag('s3')],
                       [tag('flip'), tag('noflip')], [tag('pack')]])
    out = tta(dict(trail=[], img_id=4))
    assert len(tta) == 6
    assert out['trail'] == [[s, f, 'pack'] for s in ('s1', 's2', 's3')
                            for f in ('flip', 'noflip')]
    assert out['img_id'] == [4] * 6  # every key becomes a list per view


def test_views_run_on_copies_and_pack_detection_inputs():
    tta = TTAug([
        [dict(type='Resize', scale=(128, 64), keep_ratio=True),
         dict(type='Resize', scale=(32, 16), keep_ratio=True)],
        [dict(type='RandomFlip', prob=1.), dict(type='RandomFlip', prob=0.)],
        [dict(type='PackDetInputs', meta_keys=META_KEYS)]])
    img = np.arange(32 * 64 * 3, dtype=np.uint8).reshape(32, 64, 3)
    results = dict(img=img, img_id=1, img_path=None, ori_shape=(32, 64),
                   img_shape=(32, 64))
    out = tta(results)
    assert results['img'] is img and 'flip' not in results  # untouched
    shapes = [tuple(x.shape) for x in out['inputs']]
    assert shapes == [(3, 64, 128)] * 2 + [(3, 16, 32)] * 2
    metas = [s.metainfo for s in out['data_samples']]
    assert [m['flip'] for m in metas] == [True, False, True, False]
    assert [m['scale_factor'] for m in metas] == [(2.0, 2.0)] * 2 + [
        (0.5, 0.5)] * 2
    # the flipped view is the mirror of the unflipped one
    assert torch.equal(out['inputs'][0], out['inputs'][1].flip(-1))
    # pseudo_collate groups view v of every image: inputs[v][i]
    batch = pseudo_collate([out, tta(dict(results, img_id=2))])
    assert len(batch['inputs']) == 4 and len(batch['inputs'][0]) == 2
    assert [s.img_id for s in batch['data_samples'][3]] == [1, 2]


def test_dropped_views_and_bad_groups():
    keep = lambda r: r  # noqa: E731
    drop = lambda r: None  # noqa: E731
    with pytest.raises(ValueError, match='view 1 .*allow_empty'):
        TTAug([[keep, drop]])(dict(img_path='x.jpg'))
    out = TTAug([[keep, drop]], allow_empty=True)(dict(a=1))
    assert out == dict(a=[1])
    assert TTAug([[drop]], allow_empty=True)(dict(a=1)) is None
    with pytest.raises(TypeError, match='list of non-empty lists'):
        TTAug([dict(type='RandomFlip', prob=1.)])
    with pytest.raises(TypeError, match='list of non-empty lists'):
        TTAug([[]])


# ------------------------------------------------------ merge_aug_bboxes
def test_un_flipping_each_direction():
    box = torch.tensor([[4., 2., 20., 10.]])
    metas = [dict(ori_shape=(30, 64), flip=True, flip_direction=d)
             for d in ('horizontal', 'vertical', 'diagonal')]
    metas.append(dict(ori_shape=(30, 64), flip=False, flip_direction=None))
    bboxes, scores = merge_aug_bboxes([box] * 4, [torch.tensor([.5])] * 4,
                                      metas)
    # x' = 64 - x, y' = 30 - y, swapping the two corners
    assert bboxes.tolist() == [[44., 2., 60., 10.], [4., 20., 20., 28.],
                               [44., 20., 60., 28.], [4., 2., 20., 10.]]
    assert scores.tolist() == [.5] * 4
    assert merge_aug_bboxes([box], None, metas[-1:]).tolist() == [
        [4., 2., 20., 10.]]


# -------------------------------------------- flip-TTA of a RetinaNet
def _tiny_retinanet():
    model = dict(
        type='RetinaNet',
        data_preprocessor=dict(
            type='DetDataPreprocessor', mean=[0, 0, 0], std=[1, 1, 1],
            bgr_to_rgb=True, pad_size_divisor=32),
        backbone=dict(type='ResNet', depth=18, out_indices=(1, 2, 3),
                      base_channels=8, init_cfg=None),
        neck=dict(type='FPN', in_channels=[16, 32, 64], out_channels=8,
                  start_level=0, add_extra_convs='on_input', num_outs=5),
        bbox_head=dict(
            type='RetinaHead', num_classes=3, in_channels=8,
            stacked_convs=1, feat_channels=8,
            anchor_generator=dict(
                type='AnchorGenerator', octave_base_scale=4,
                scales_per_octave=3, ratios=[0.5, 1.0, 2.0],
                strides=[8, 16, 32, 64, 128]),
            bbox_coder=dict(type='DeltaXYWHBBoxCoder',
                            target_means=[.0, .0, .0, .0],
                            target_stds=[1.0, 1.0, 1.0, 1.0])),
        test_cfg=dict(nms_pre=1000, min_bbox_size=0, score_thr=0.05,
                      nms=dict(type='nms', iou_threshold=0.5),
                      max_per_img=100))
    with DefaultScope.overwrite_default_scope('detkit'):
        return MODELS.build(dict(
            type='DetTTAModel', module=model,
            tta_cfg=dict(nms=dict(type='nms', iou_threshold=0.5),
                         max_per_img=100)))


# Logits set by hand on level 0 (stride 8) at row 2; anchor 3 of each
# location is ratio 1, scale 2^0: a 32x32 box around (8 * col, 16).
LOGITS = [  # (column, class, logit)
    (3, 1, 5.0),  # box (8, 0, 40, 32), off the image's centre line
    (8, 2, 3.0),  # box (48, 0, 80, 32), centred on x = 64 = width / 2
    (8, 0, 4.0),  # the same box as class 0
]


def _crafted_head(feats):
    """RetinaHead outputs: every logit -10 except LOGITS, zero deltas (so
    each box is its anchor), whatever the image."""
    num_anchors, num_classes = 9, 3
    cls_scores, bbox_preds = [], []
    for level, feat in enumerate(feats):
        b, _, h, w = feat.shape
        cls = feat.new_full((b, num_anchors * num_classes, h, w), -10.)
        if level == 0:
            for col, label, logit in LOGITS:
                cls[:, 3 * num_classes + label, 2, col] = logit
        cls_scores.append(cls)
        bbox_preds.append(feat.new_zeros((b, num_anchors * 4, h, w)))
    return cls_scores, bbox_preds


def test_flip_tta_of_a_retinanet_on_a_symmetric_image_merges_by_hand():
    """A 64x32 image, resized x2 to 128x64, seen flipped and not. The
    picture is its own mirror, so the head gives the same outputs in both
    views: the boxes A = (8, 0, 40, 32) / 2 = (4, 0, 20, 16) (class 1,
    sigmoid(5)) and C = (48, 0, 80, 32) / 2 = (24, 0, 40, 16) (classes 2
    and 0, sigmoid(3) and sigmoid(4)) in each view's own coordinates.
    Un-flipping the flipped view (x -> 64 - x) gives A' = (44, 0, 60, 16),
    which does not overlap A (IoU 0: both kept), and C' = C (IoU 1: one
    kept per class). Classes never suppress each other."""
    tta_model = _tiny_retinanet().eval()
    tta_model.module.bbox_head.forward = _crafted_head
    pipeline = TTAug([
        [dict(type='Resize', scale=(128, 64), keep_ratio=True)],
        [dict(type='RandomFlip', prob=1.), dict(type='RandomFlip', prob=0.)],
        [dict(type='PackDetInputs', meta_keys=META_KEYS)]])
    img = _image()
    data = pseudo_collate([
        pipeline(dict(img=img, img_id=7, img_path=None, ori_shape=(32, 64),
                      img_shape=(32, 64)))])
    with torch.no_grad():
        (merged, ) = tta_model.test_step(data)
    pred = merged.pred_instances
    s = lambda x: 1 / (1 + math.exp(-x))  # noqa: E731
    expected = sorted([
        (s(5.), 1, (4., 0., 20., 16.)),
        (s(5.), 1, (44., 0., 60., 16.)),
        (s(4.), 0, (24., 0., 40., 16.)),
        (s(3.), 2, (24., 0., 40., 16.)),
    ], key=lambda e: (-e[0], e[2]))
    got = sorted(zip(pred.scores.tolist(), pred.labels.tolist(),
                     map(tuple, pred.bboxes.tolist())),
                 key=lambda e: (-e[0], e[2]))
    assert len(got) == 4
    for (gs, gl, gb), (es, el, eb) in zip(got, expected):
        assert gl == el
        assert gs == pytest.approx(es, abs=1e-6)
        assert gb == pytest.approx(eb, abs=1e-4)
    # descending scores, and the first view's metainfo (the flipped one)
    assert pred.scores.tolist() == sorted(pred.scores.tolist(), reverse=True)
    assert merged.img_id == 7 and merged.flip is True


def test_max_per_img_and_empty_predictions():
    """Two views of a 100x100 image: the flipped view's box (0, 0, 10, 10)
    is (90, 0, 100, 10) in the original; with max_per_img=2 the weakest of
    the three surviving boxes goes."""
    model = _tiny_retinanet()
    model.tta_cfg = dict(nms=dict(type='nms', iou_threshold=0.5),
                         max_per_img=2)

    def sample(boxes, scores, flip):
        s = DetDataSample(metainfo=dict(ori_shape=(100, 100), flip=flip,
                                        flip_direction='horizontal'))
        s.pred_instances = InstanceData(
            bboxes=torch.tensor(boxes, dtype=torch.float32).reshape(-1, 4),
            scores=torch.tensor(scores), labels=torch.zeros(
                len(scores), dtype=torch.long))
        return s

    views = [sample([[0, 0, 10, 10], [50, 50, 60, 60]], [.9, .3], False),
             sample([[0, 0, 10, 10]], [.6], True)]  # -> (90, 0, 100, 10)
    (merged, ) = model.merge_preds([views])
    assert merged.pred_instances.scores.tolist() == pytest.approx([.9, .6])
    assert merged.pred_instances.bboxes.tolist() == [[0, 0, 10, 10],
                                                    [90, 0, 100, 10]]
    empty = [sample([], [], False), sample([], [], True)]
    (merged, ) = model.merge_preds([empty])
    assert merged is empty[0] and len(merged.pred_instances) == 0


def test_tta_cfg_is_required():
    with pytest.raises(ValueError, match='tta_cfg=dict'):
        DetTTAModel(module=_tiny_retinanet().module, tta_cfg=None)


# ------------------------------------------------------------- --tta
def test_enable_tta_uses_the_config_or_a_default_flip():
    test_pipeline = [
        dict(type='LoadImageFromFile'),
        dict(type='Resize', scale=(1333, 800), keep_ratio=True),
        dict(type='LoadAnnotations', with_bbox=True),
        dict(type='PackDetInputs')
    ]
    cfg = Config(dict(
        model=dict(type='RetinaNet'),
        test_dataloader=dict(dataset=dict(
            type='RepeatDataset', times=2,
            dataset=dict(type='CocoDataset', pipeline=test_pipeline)))))
    with pytest.warns(UserWarning, match='no tta_model'):
        enable_tta(cfg)
    assert cfg.model.type == 'DetTTAModel'
    assert cfg.model.module == dict(type='RetinaNet')
    assert cfg.model.tta_cfg == dict(nms=dict(type='nms', iou_threshold=0.5),
                                     max_per_img=100)
    inner = cfg.test_dataloader.dataset.dataset
    assert inner.pipeline[:3] == test_pipeline[:3]
    assert inner.pipeline[3] == default_flip_tta_pipeline(test_pipeline)[3]
    assert inner.pipeline[3]['transforms'] == [
        [dict(type='RandomFlip', prob=1.), dict(type='RandomFlip', prob=0.)],
        [dict(type='PackDetInputs', meta_keys=META_KEYS)]]

    own = [dict(type='LoadImageFromFile'), dict(type='TestTimeAug',
                                                 transforms=[[dict(
                                                     type='PackDetInputs')]])]
    cfg = Config(dict(
        model=dict(type='RetinaNet'),
        tta_model=dict(type='DetTTAModel', tta_cfg=dict(
            nms=dict(type='nms', iou_threshold=0.6), max_per_img=5)),
        tta_pipeline=own,
        test_dataloader=dict(dataset=dict(type='CocoDataset',
                                          pipeline=test_pipeline))))
    enable_tta(cfg)
    assert cfg.model.tta_cfg.max_per_img == 5
    assert cfg.test_dataloader.dataset.pipeline == own
