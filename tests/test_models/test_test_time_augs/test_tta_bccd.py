"""``tools/test.py --tta`` end to end on real BCCD images, with
mmdetection's own RetinaNet configs (``default_scope='mmdet'``) as the
base: the config's TTA (retinanet_tta.py) and the default flip TTA."""
import os.path as osp
import runpy
import sys

import cv2
import numpy as np
import pytest
import torch
from mmengine.config import Config

from conftest import REPO_ROOT, require_shared
from detkit.apis import inference_detector, init_detector
from detkit.models.layers import batched_nms
from detkit.registry import MODELS
from detkit.structures import bbox_flip
from detkit.utils import to_detkit_scope

TEST = runpy.run_path(osp.join(REPO_ROOT, 'tools', 'test.py'),
                      run_name='detkit_tools_test_tta')

# A small RetinaNet (R-18 backbone, 16-channel FPN and head) on BCCD's
# first validation images at 320x240, one per batch.
SMALL = '''
_base_ = {base!r}
data_root = {data_root!r}
classes = ('RBC', 'WBC', 'Platelets')
model = dict(
    backbone=dict(depth=18, init_cfg=None),
    neck=dict(in_channels=[64, 128, 256, 512], out_channels=16),
    bbox_head=dict(num_classes=3, in_channels=16, feat_channels=16,
                   stacked_convs=1))
test_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='Resize', scale=(320, 240), keep_ratio=True),
    dict(type='LoadAnnotations', with_bbox=True),
    dict(type='PackDetInputs', meta_keys=(
        'img_id', 'img_path', 'ori_shape', 'img_shape', 'scale_factor'))]
test_dataloader = dict(
    batch_size=1, num_workers=0, persistent_workers=False,
    dataset=dict(data_root=data_root, ann_file='val.json',
                 data_prefix=dict(img='images/'), pipeline=test_pipeline,
                 metainfo=dict(classes=classes), indices={num}))
test_evaluator = dict(ann_file=data_root + 'val.json')
'''
# Two of retinanet_tta.py's three scales, small enough for a CPU test.
SMALL_TTA = '''
img_scales = [(320, 240), (160, 120)]
tta_pipeline = [
    dict(type='LoadImageFromFile', backend_args=None),
    dict(type='TestTimeAug', transforms=[
        [dict(type='Resize', scale=s, keep_ratio=True) for s in img_scales],
        [dict(type='RandomFlip', prob=1.), dict(type='RandomFlip', prob=0.)],
        [dict(type='LoadAnnotations', with_bbox=True)],
        [dict(type='PackDetInputs', meta_keys=(
            'img_id', 'img_path', 'ori_shape', 'img_shape', 'scale_factor',
            'flip', 'flip_direction'))]])]
'''


def _setup(tmp_path, base_name, extra='', num=2):
    base = require_shared('reference', 'mmdet-3.3.0', 'configs', 'retinanet',
                          base_name)
    data_root = require_shared('data', 'bccd') + '/'
    cfg_file = tmp_path / f'small_{osp.splitext(base_name)[0]}.py'
    cfg_file.write_text(SMALL.format(base=base, data_root=data_root,
                                     num=num) + extra)
    # Random weights, saved as a checkpoint: predictions are arbitrary but
    # fixed, which is all the comparison below needs.
    torch.manual_seed(0)
    cfg = to_detkit_scope(Config.fromfile(str(cfg_file)), log=False)
    from mmengine.registry import DefaultScope
    with DefaultScope.overwrite_default_scope('detkit'):
        model = MODELS.build(cfg.model)
    with torch.no_grad():  # a head bias that gives many boxes above 0.05
        model.bbox_head.retina_cls.bias.fill_(-1.)
    ckpt = tmp_path / 'small.pth'
    torch.save({'state_dict': model.state_dict()}, ckpt)
    return str(cfg_file), str(ckpt), data_root


def _run_tta(tmp_path, cfg_file, ckpt, name):
    out = str(tmp_path / f'{name}.pkl')
    metrics = TEST['main']([
        cfg_file, ckpt, '--tta', '--out', out, '--work-dir',
        str(tmp_path / name), '--cfg-options', f'experiment_name={name}'
    ])
    sys.path.insert(0, osp.join(REPO_ROOT, 'tools', 'analysis_tools'))
    try:
        from results_io import load_results
    finally:
        sys.path.pop(0)
    return metrics, load_results(out)


def _view_predictions(cfg_file, ckpt, path, scale=None):
    """The plain detector on the image and on its mirror (boxes mapped
    back): what a flip TTA merges."""
    options = None
    if scale is not None:
        options = {'test_dataloader.dataset.pipeline.1.scale': scale}
    model = init_detector(cfg_file, ckpt, cfg_options=options)
    img = cv2.imread(path)
    plain = inference_detector(model, img).pred_instances
    mirrored = inference_detector(model,
                                  np.ascontiguousarray(img[:, ::-1]))
    mirrored = mirrored.pred_instances
    return [(plain.bboxes, plain.scores, plain.labels),
            (bbox_flip(mirrored.bboxes, img.shape[:2]), mirrored.scores,
             mirrored.labels)]


def _merge_by_hand(views, max_per_img=100):
    bboxes = torch.cat([v[0] for v in views])
    scores = torch.cat([v[1] for v in views])
    labels = torch.cat([v[2] for v in views])
    dets, keep = batched_nms(bboxes, scores, labels,
                             dict(type='nms', iou_threshold=0.5))
    return dets[:max_per_img], labels[keep][:max_per_img]


def _assert_same(result, dets, labels):
    pred = result['pred_instances']
    assert len(pred['scores']) == len(dets) > 0
    torch.testing.assert_close(pred['scores'], dets[:, 4], atol=1e-5,
                               rtol=0)
    torch.testing.assert_close(pred['bboxes'], dets[:, :4], atol=1e-3,
                               rtol=0)
    assert torch.equal(pred['labels'], labels)


def test_default_flip_tta_on_bccd(tmp_path):
    """retinanet_r18_fpn_1x_coco.py has no TTA: --tta warns and merges the
    test pipeline with and without a horizontal flip. The result equals
    running the plain model on each image and on its mirror and merging by
    NMS at IoU 0.5, 100 kept."""
    cfg_file, ckpt, data_root = _setup(tmp_path,
                                       'retinanet_r18_fpn_1x_coco.py')
    with pytest.warns(UserWarning, match='no tta_model'):
        metrics, results = _run_tta(tmp_path, cfg_file, ckpt, 'flip')
    assert 0 <= metrics['coco/bbox_mAP'] <= metrics['coco/bbox_mAP_50'] <= 1
    assert len(results) == 2
    for result in results:
        assert (result['ori_shape'], result['img_shape']) == ((480, 640),
                                                             (240, 320))
        assert result['flip'] is True  # the first view's metainfo
        views = _view_predictions(cfg_file, ckpt, result['img_path'])
        _assert_same(result, *_merge_by_hand(views))


def test_config_tta_on_bccd(tmp_path):
    """retinanet_r50_fpn_1x_coco.py inherits retinanet_tta.py (here with
    two scales): four views per image, merged as the plain model's
    predictions at each scale, flipped and not, would be."""
    cfg_file, ckpt, _ = _setup(tmp_path, 'retinanet_r50_fpn_1x_coco.py',
                               SMALL_TTA, num=1)
    metrics, results = _run_tta(tmp_path, cfg_file, ckpt, 'scales')
    assert 'coco/bbox_mAP' in metrics
    (result, ) = results
    views = []
    for scale in ((320, 240), (160, 120)):
        views += _view_predictions(cfg_file, ckpt, result['img_path'], scale)
    _assert_same(result, *_merge_by_hand(views))
