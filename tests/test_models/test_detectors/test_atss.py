"""ATSS from the mmdetection-style config: checkpoint layout, the loss /
predict / tensor interface on a batch of mixed image sizes."""
import os.path as osp

import torch
from conftest import REPO_ROOT, read_compat
from mmengine.config import Config
from mmengine.registry import DefaultScope
from mmengine.structures import InstanceData

from detkit.registry import MODELS
from detkit.structures import DetDataSample

CONFIG = osp.join(REPO_ROOT, 'configs/atss/atss_r50_fpn_1x_coco.py')


def build(cfg_options=None):
    cfg = Config.fromfile(CONFIG)
    if cfg_options:
        cfg.merge_from_dict(cfg_options)
    with DefaultScope.overwrite_default_scope('detkit'):
        return MODELS.build(cfg.model)


def small_atss():
    """ResNet-18 / 32-channel ATSS with 3 classes: fast on CPU."""
    return build({
        'model.backbone.depth': 18,
        'model.backbone.init_cfg': None,
        'model.neck.in_channels': [64, 128, 256, 512],
        'model.neck.out_channels': 32,
        'model.bbox_head.in_channels': 32,
        'model.bbox_head.feat_channels': 32,
        'model.bbox_head.stacked_convs': 1,
        'model.bbox_head.num_classes': 3,
    })


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


def test_state_dict_equals_mmdetection_checkpoint_layout():
    model = build()
    expected = read_compat('atss_r50_fpn')
    got = {k: (tuple(v.shape), str(v.dtype).replace('torch.', ''))
           for k, v in model.state_dict().items()}
    assert got == expected
    assert len(got) == 369
    state = {k: torch.full(shape, 0.5, dtype=getattr(torch, dtype))
             for k, (shape, dtype) in expected.items()}
    model.load_state_dict(state, strict=True)
    assert model.bbox_head.atss_centerness.bias.item() == 0.5


def test_loss_predict_and_tensor_modes():
    torch.manual_seed(0)
    model = small_atss()
    model.init_weights()
    # the second image is padded to 128 x 96 inside a 128 x 160 batch
    data = batch(model, sizes=((120, 160), (100, 90)))
    assert data['inputs'].shape == (2, 3, 128, 160)
    assert data['data_samples'][1].pad_shape == (128, 96)
    losses = model(**data, mode='loss')
    assert list(losses) == ['loss_cls', 'loss_bbox', 'loss_centerness']
    assert all(torch.isfinite(v) for v in losses.values())
    assert losses['loss_bbox'] > 0
    cls_scores, bbox_preds, centernesses = model(data['inputs'],
                                                 mode='tensor')
    assert [tuple(c.shape[-2:]) for c in cls_scores] == [
        (16, 20), (8, 10), (4, 5), (2, 3), (1, 2)]
    assert cls_scores[0].shape[1] == 3 and bbox_preds[0].shape[1] == 4
    assert centernesses[0].shape[1] == 1
    # every class starts at probability 0.01 (bias -log(99))
    assert torch.allclose(model.bbox_head.atss_cls.bias,
                          torch.tensor(-4.59512), atol=1e-5)
    model.eval()
    with torch.no_grad():
        model.bbox_head.atss_cls.bias.fill_(0.)  # scores ~0.5: boxes
        out = model(**data, mode='predict')
    pred = out[1].pred_instances
    assert 0 < len(pred) <= 100
    assert (pred.scores[:-1] >= pred.scores[1:]).all()
    # clipped to the image, then rescaled to the original (twice as big)
    assert pred.bboxes[:, 2].max() <= 90 * 2 + 1e-3
    assert pred.bboxes[:, 3].max() <= 100 * 2 + 1e-3
