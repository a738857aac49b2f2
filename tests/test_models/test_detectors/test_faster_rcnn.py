"""Faster R-CNN from the mmdetection-style config: checkpoint layout, the
loss keys and their total, proposal settings in training and testing, and
prediction in original-image pixels."""
import os.path as osp

import pytest
import torch
from conftest import REPO_ROOT, read_compat
from mmengine.config import Config
from mmengine.registry import DefaultScope
from mmengine.structures import InstanceData

from detkit.engine import load_checkpoint
from detkit.registry import MODELS
from detkit.structures import DetDataSample

CONFIG = osp.join(REPO_ROOT,
                  'configs/faster_rcnn/faster-rcnn_r50_fpn_1x_coco.py')
SMALL = {
    'model.backbone.depth': 18,
    'model.backbone.init_cfg': None,
    'model.neck.in_channels': [64, 128, 256, 512],
    'model.neck.out_channels': 16,
    'model.rpn_head.in_channels': 16,
    'model.rpn_head.feat_channels': 16,
    'model.roi_head.bbox_roi_extractor.out_channels': 16,
    'model.roi_head.bbox_head.in_channels': 16,
    'model.roi_head.bbox_head.fc_out_channels': 32,
    'model.roi_head.bbox_head.num_classes': 3,
}



@pytest.fixture(autouse=True)
def one_thread():
    # On the shared 2-core CI machine intra-op threads mostly wait for each
    # other; one thread runs these small models several times faster.
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)

def build(cfg_options=None):
    cfg = Config.fromfile(CONFIG)
    if cfg_options:
        cfg.merge_from_dict(cfg_options)
    with DefaultScope.overwrite_default_scope('detkit'):
        return MODELS.build(cfg.model)


def batch(model, sizes=((120, 160), (100, 90)), with_gt=(True, False)):
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
    return model.data_preprocessor(dict(inputs=inputs, data_samples=samples),
                                   True)


def test_state_dict_equals_mmdetection_checkpoint_layout():
    model = build()
    expected = read_compat('faster_rcnn_r50_fpn')
    got = {k: (tuple(v.shape), str(v.dtype).replace('torch.', ''))
           for k, v in model.state_dict().items()}
    assert got == expected
    assert len(got) == 348
    # train / test settings reach the heads
    assert model.rpn_head.test_cfg.nms_pre == 1000
    assert model.rpn_head.sampler.num == 256
    assert model.roi_head.bbox_sampler.num == 512
    assert model.roi_head.bbox_assigner.match_low_quality is False
    assert model.roi_head.test_cfg.max_per_img == 100


def test_rpn_checkpoint_loads_into_faster_rcnn(tmp_path):
    """An RPN checkpoint names the head bbox_head.*: it fills rpn_head.*."""
    model = build(SMALL)
    state = {k: torch.full_like(v, 0.5) if v.is_floating_point() else v
             for k, v in model.state_dict().items()
             if not k.startswith('roi_head.')}
    state = {('bbox_head.' + k[len('rpn_head.'):]
              if k.startswith('rpn_head.') else k): v
             for k, v in state.items()}
    path = str(tmp_path / 'rpn.pth')
    torch.save({'state_dict': state}, path)
    load_checkpoint(model, path)
    assert model.rpn_head.rpn_cls.weight.eq(0.5).all()
    fresh = build(SMALL)
    fresh.load_state_dict(state, strict=False)  # nn.Module path
    assert fresh.rpn_head.rpn_reg.bias.eq(0.5).all()


def test_loss_keys_total_and_proposal_settings():
    torch.manual_seed(0)
    model = build(SMALL)
    model.init_weights()
    seen = []
    predict_by_feat = model.rpn_head.predict_by_feat

    def record(*args, **kwargs):
        seen.append(kwargs.get('cfg') or model.rpn_head.test_cfg)
        return predict_by_feat(*args, **kwargs)

    model.rpn_head.predict_by_feat = record
    data = batch(model)
    losses = model(**data, mode='loss')
    assert list(losses) == ['loss_rpn_cls', 'loss_rpn_bbox', 'loss_cls',
                            'acc', 'loss_bbox']
    assert all(torch.isfinite(v).all() for v in losses.values())
    # training proposals use train_cfg.rpn_proposal (nms_pre 2000)
    assert seen[-1].nms_pre == 2000
    # the RPN's targets are class-agnostic: no copy, the samples untouched
    assert data['data_samples'][0].gt_instances.labels.tolist() == [0, 2]
    total, log_vars = model.parse_losses(losses)
    expected = sum(v for k, v in losses.items() if 'loss' in k)
    assert total.item() == pytest.approx(expected.item())
    assert 0 <= log_vars['acc'].item() <= 100

    model.eval()
    with torch.no_grad():
        out = model(**data, mode='predict')
    assert seen[-1].nms_pre == 1000  # test_cfg.rpn
    for sample, (h, w) in zip(out, ((120, 160), (100, 90))):
        pred = sample.pred_instances
        assert len(pred) <= 100
        assert set(pred.labels.tolist()) <= {0, 1, 2}
        if len(pred):
            assert (pred.scores[:-1] >= pred.scores[1:]).all()
            assert (pred.scores > 0.05).all()
            # rescaled to the original image (twice the input size)
            assert pred.bboxes[:, 2].max() <= 2 * w + 1e-3
            assert pred.bboxes[:, 3].max() <= 2 * h + 1e-3
    with torch.no_grad():
        (cls_score, bbox_pred), = model(data['inputs'], data['data_samples'],
                                        mode='tensor')
    assert cls_score.shape[1] == 4 and bbox_pred.shape[1] == 12


def test_any_dense_head_serves_as_the_rpn_with_its_own_loss_names():
    # mmdetection's FCOS-RPN config puts a detection head in rpn_head: it
    # is made class-agnostic (labels 0 and 2 would not fit num_classes=1)
    # and its losses are named 'rpn_' + key, as mmdetection names them
    torch.manual_seed(0)
    retina = dict(type='RetinaHead', in_channels=16, feat_channels=16,
                  stacked_convs=1,
                  anchor_generator=dict(type='AnchorGenerator', scales=[8],
                                        ratios=[0.5, 1.0, 2.0],
                                        strides=[4, 8, 16, 32, 64]))
    model = build(dict(SMALL, **{'model.rpn_head': retina}))
    model.init_weights()
    assert model.rpn_head.class_agnostic
    data = batch(model)
    losses = model(**data, mode='loss')
    assert list(losses) == ['rpn_loss_cls', 'rpn_loss_bbox', 'loss_cls',
                            'acc', 'loss_bbox']
    assert all(torch.isfinite(v).all() for v in losses.values())
    # names that clash with the RoI head's are an error, not an overwrite
    model.rpn_head.loss_names = dict(cls='loss_cls', bbox='loss_rpn_bbox')
    with pytest.raises(ValueError, match=r"both return \['loss_cls'\]"):
        model(**data, mode='loss')


def test_rpn_head_num_classes_is_forced_to_one_and_guard_is_passed_on():
    with pytest.warns(UserWarning, match='class-agnostic'):
        model = build(dict(SMALL, **{'model.rpn_head.num_classes': 3,
                                     'model.skip_nonfinite': True}))
    assert model.rpn_head.num_classes == 1
    assert model.skip_nonfinite is True


def test_train_step_stops_on_non_finite_roi_loss():
    from mmengine.optim import OptimWrapper

    from detkit.models.detectors import NonFiniteLossError
    torch.manual_seed(0)
    model = build(SMALL)
    model.init_weights()
    model.roi_head.bbox_head.fc_reg.bias.data.fill_(float('nan'))
    optim = OptimWrapper(torch.optim.SGD(model.parameters(), lr=0.01))
    data = batch(model, sizes=((64, 64), ), with_gt=(True, ))
    raw = dict(inputs=[torch.zeros(3, 64, 64, dtype=torch.uint8)],
               data_samples=data['data_samples'])
    with pytest.raises(NonFiniteLossError, match='loss_bbox'):
        model.train_step(raw, optim)


def test_wrong_neck_channels_are_named_before_the_first_forward():
    with pytest.raises(ValueError, match=r'\[64, 128, 256, 512\]'):
        build({'model.backbone.depth': 18, 'model.backbone.init_cfg': None})
