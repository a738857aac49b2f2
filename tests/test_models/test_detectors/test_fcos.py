"""FCOS from the mmdetection-style configs: checkpoint layout, the loss /
predict / tensor interface, the refused DCN config, and an FCOS head as
Faster R-CNN's RPN."""
import os.path as osp

import pytest
import torch
from conftest import REPO_ROOT, read_compat, require_shared
from mmengine.config import Config
from mmengine.registry import DefaultScope
from mmengine.structures import InstanceData

from detkit.engine.hooks.num_class_check_hook import check_num_classes
from detkit.registry import MODELS
from detkit.structures import DetDataSample

CONFIGS = osp.join(REPO_ROOT, 'configs')
FCOS = 'fcos/fcos_r50-caffe_fpn_gn-head_1x_coco.py'
IMPROVED = ('fcos/fcos_r50-caffe_fpn_gn-head-center-normbbox-centeronreg-'
            'giou_1x_coco.py')
FCOS_RPN = 'faster_rcnn/faster-rcnn_r50_fpn_fcos-rpn_1x_coco.py'
SMALL = {
    'model.backbone.depth': 18,
    'model.backbone.init_cfg': None,
    'model.neck.in_channels': [64, 128, 256, 512],
    'model.neck.out_channels': 32,
}


def build(rel, cfg_options=None, root=CONFIGS):
    cfg = Config.fromfile(osp.join(root, rel))
    if cfg_options:
        cfg.merge_from_dict(cfg_options)
    with DefaultScope.overwrite_default_scope('detkit'):
        return MODELS.build(cfg.model)


def small_fcos(rel=FCOS):
    """ResNet-18 / 32-channel FCOS with 3 classes: fast on CPU."""
    return build(rel, dict(SMALL, **{
        'model.bbox_head.in_channels': 32,
        'model.bbox_head.feat_channels': 32,
        'model.bbox_head.stacked_convs': 1,
        'model.bbox_head.num_classes': 3,
    }))


def batch(model, sizes=((120, 160), (100, 90)), with_gt=(True, True)):
    inputs, samples = [], []
    for (h, w), has_gt in zip(sizes, with_gt):
        inputs.append(torch.randint(0, 255, (3, h, w), dtype=torch.uint8))
        ds = DetDataSample(metainfo=dict(
            img_id=len(samples), img_shape=(h, w), ori_shape=(h * 2, w * 2),
            scale_factor=(0.5, 0.5)))
        boxes = [[10., 20., 60., 80.], [30., 5., 90., 50.]] if has_gt else []
        ds.gt_instances = InstanceData(
            bboxes=torch.tensor(boxes).reshape(-1, 4),
            labels=torch.tensor([0, 2][:len(boxes)], dtype=torch.long))
        samples.append(ds)
    return model.data_preprocessor(
        dict(inputs=inputs, data_samples=samples), True)


def _layout(model):
    return {k: (tuple(v.shape), str(v.dtype).replace('torch.', ''))
            for k, v in model.state_dict().items()}


def test_state_dict_equals_mmdetection_checkpoint_layout():
    model = build(FCOS)
    expected = read_compat('fcos_r50_fpn')
    assert _layout(model) == expected
    assert len(expected) == 369
    state = {k: torch.full(shape, 0.5, dtype=getattr(torch, dtype))
             for k, (shape, dtype) in expected.items()}
    model.load_state_dict(state, strict=True)
    assert model.bbox_head.scales[4].scale.item() == 0.5
    # the improved config's tower convs have biases (conv_bias=True)
    improved = _layout(build(IMPROVED))
    assert improved['bbox_head.cls_convs.0.conv.bias'] == ((256, ), 'float32')
    assert len(improved) == 369 + 8


def test_loss_predict_and_tensor_modes():
    torch.manual_seed(0)
    model = small_fcos()
    model.init_weights()
    data = batch(model, with_gt=(True, False))
    assert data['inputs'].shape == (2, 3, 128, 160)
    losses = model(**data, mode='loss')
    assert list(losses) == ['loss_cls', 'loss_bbox', 'loss_centerness']
    assert all(torch.isfinite(v) for v in losses.values())
    # -log IoU of 1 px distances against 50 px boxes at the start
    assert losses['loss_bbox'] > 3
    cls_scores, bbox_preds, centernesses = model(data['inputs'],
                                                 mode='tensor')
    assert [tuple(c.shape[-2:]) for c in cls_scores] == [
        (16, 20), (8, 10), (4, 5), (2, 3), (1, 2)]
    assert cls_scores[0].shape[1] == 3 and bbox_preds[0].shape[1] == 4
    assert centernesses[0].shape[1] == 1
    # exp of the scaled regression: positive distances
    assert all(bool((b > 0).all()) for b in bbox_preds)
    # every class starts at probability 0.01 (bias -log(99))
    assert torch.allclose(model.bbox_head.conv_cls.bias,
                          torch.tensor(-4.59512), atol=1e-5)
    model.eval()
    with torch.no_grad():
        model.bbox_head.conv_cls.bias.fill_(0.)  # scores ~0.5: boxes
        out = model(**data, mode='predict')
    pred = out[0].pred_instances
    assert 0 < len(pred) <= 100
    assert (pred.scores[:-1] >= pred.scores[1:]).all()
    # rescaled to the original image (twice the input size here)
    assert pred.bboxes[:, 2].max() <= 160 * 2 + 1e-3
    # a class score near 0.5 times a centerness below 1
    assert pred.scores.max() < 0.6


def test_the_dcn_config_is_refused_with_a_clear_message():
    root = require_shared('reference', 'mmdet-3.3.0', 'configs')
    rel = ('fcos/fcos_r50-dcn-caffe_fpn_gn-head-center-normbbox-'
           'centeronreg-giou_1x_coco.py')
    with pytest.raises(NotImplementedError, match='dcn.*compiled ops'):
        build(rel, root=root)
    # without the backbone's DCN, the head refuses its own
    with pytest.raises(NotImplementedError,
                       match='dcn_on_last_conv=True.*compiled ops'):
        build(rel, {'model.backbone.dcn': None}, root=root)


def test_an_fcos_head_proposes_for_faster_rcnn():
    torch.manual_seed(0)
    model = build(FCOS_RPN, dict(SMALL, **{
        'model.rpn_head.in_channels': 32,
        'model.rpn_head.feat_channels': 32,
        'model.rpn_head.stacked_convs': 1,
        'model.roi_head.bbox_roi_extractor.out_channels': 32,
        'model.roi_head.bbox_head.in_channels': 32,
        'model.roi_head.bbox_head.num_classes': 3,
    }))
    head = model.rpn_head
    assert type(head).__name__ == 'FCOSHead' and head.num_classes == 1
    assert head.class_agnostic
    # the class check skips the RPN, as mmdetection's does by its name
    check_num_classes(model, ('a', 'b', 'c'), 'training')
    model.init_weights()
    data = batch(model)
    losses = model(**data, mode='loss')
    assert list(losses) == ['rpn_loss_cls', 'rpn_loss_bbox',
                            'rpn_loss_centerness', 'loss_cls', 'acc',
                            'loss_bbox']
    assert all(torch.isfinite(v).all() for v in losses.values())
    # labels 0 and 2 became "object": they fit the one-class RPN
    samples = data['data_samples']
    x = model.extract_feat(data['inputs'])
    with torch.no_grad():
        targets = head.get_targets(*_priors(head, x, samples))
    assert set(targets['labels'].unique().tolist()) == {0, 1}
    model.eval()
    with torch.no_grad():
        proposals = head.predict(x, samples, rescale=False)
    assert 0 < len(proposals[0]) <= 1000
    assert set(proposals[0].labels.tolist()) == {0}


def _priors(head, x, samples):
    from detkit.models.utils import pad_gts
    metas = [s.metainfo for s in samples]
    priors, valid, counts = head.get_priors([f.shape[-2:] for f in x[:5]],
                                            metas, x[0].device)
    return (priors, valid, pad_gts([s.gt_instances for s in samples]),
            metas, counts)


def test_det_inferencer_finds_the_configs_by_name():
    from detkit.apis.det_inferencer import resolve_config
    assert resolve_config('fcos_r50-caffe_fpn_gn-head_1x_coco').model.type \
        == 'FCOS'
    assert resolve_config('atss_r50_fpn_1x_coco').model.type == 'ATSS'
