"""RetinaNet from the mmdetection-style config: checkpoint compatibility,
the loss / predict / tensor interface and the non-finite-loss guard."""
import os.path as osp

import pytest
import torch
from conftest import REPO_ROOT, read_compat
from mmengine.config import Config
from mmengine.registry import DefaultScope
from mmengine.structures import InstanceData

from detkit.registry import MODELS
from detkit.structures import DetDataSample

CONFIG = osp.join(REPO_ROOT, 'configs/retinanet/retinanet_r50_fpn_1x_coco.py')


def build(cfg_options=None):
    cfg = Config.fromfile(CONFIG)
    if cfg_options:
        cfg.merge_from_dict(cfg_options)
    with DefaultScope.overwrite_default_scope('detkit'):
        return MODELS.build(cfg.model)


def small_retinanet():
    """ResNet-18 / 32-channel RetinaNet with 3 classes: fast on CPU."""
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
        ds = DetDataSample(
            metainfo=dict(
                img_id=len(samples),
                img_shape=(h, w),
                ori_shape=(h * 2, w * 2),
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
    expected = read_compat('retinanet_r50_fpn')
    got = {
        k: (tuple(v.shape), str(v.dtype).replace('torch.', ''))
        for k, v in model.state_dict().items()
    }
    assert sorted(got) == sorted(expected)
    assert got == expected
    assert len(got) == 354


def test_strict_load_of_an_mmdetection_style_state_dict():
    model = build()
    state = {k: torch.zeros(shape, dtype=getattr(torch, dtype))
             for k, (shape, dtype) in read_compat('retinanet_r50_fpn').items()}
    model.load_state_dict(state, strict=True)
    assert model.bbox_head.retina_cls.weight.abs().sum() == 0


def test_loss_predict_and_tensor_modes():
    torch.manual_seed(0)
    model = small_retinanet()
    model.init_weights()
    data = batch(model, with_gt=(True, False))
    assert data['inputs'].shape == (2, 3, 128, 160)  # padded to /32
    losses = model(**data, mode='loss')
    assert set(losses) == {'loss_cls', 'loss_bbox'}
    assert all(torch.isfinite(v) for v in losses.values())
    assert losses['loss_bbox'] > 0
    cls_scores, bbox_preds = model(data['inputs'], mode='tensor')
    assert [tuple(c.shape[-2:]) for c in cls_scores] == [(16, 20), (8, 10),
                                                         (4, 5), (2, 3),
                                                         (1, 2)]
    assert cls_scores[0].shape[1] == 9 * 3 and bbox_preds[0].shape[1] == 36
    model.eval()
    with torch.no_grad():
        out = model(**data, mode='predict')
    pred = out[0].pred_instances
    assert pred.bboxes.shape[1] == 4 and len(pred) <= 100
    # rescaled to the original image (twice the input size here)
    if len(pred):
        assert pred.bboxes[:, 2].max() <= 160 * 2 + 1e-3
        assert (pred.scores[:-1] >= pred.scores[1:]).all()


def test_train_step_stops_on_non_finite_loss_naming_term_and_images():
    from mmengine.optim import OptimWrapper

    from detkit.models.detectors import NonFiniteLossError
    model = small_retinanet()
    model.init_weights()
    model.bbox_head.retina_reg.bias.data.fill_(float('nan'))
    optim = OptimWrapper(torch.optim.SGD(model.parameters(), lr=0.01))
    data = dict(
        inputs=[torch.zeros(3, 64, 64, dtype=torch.uint8)],
        data_samples=[batch(model, sizes=((64, 64), ))['data_samples'][0]])
    with pytest.raises(NonFiniteLossError, match=r'loss_bbox.*images'):
        model.train_step(data, optim)
    before = [p.clone() for p in model.parameters()]
    model.skip_nonfinite = True
    log_vars = model.train_step(data, optim)
    assert not torch.isfinite(log_vars['loss_bbox'])
    assert model.num_skipped_steps == 1
    # the step was skipped: no parameter moved
    assert all(
        torch.allclose(a, b, equal_nan=True)
        for a, b in zip(before, model.parameters()))
