"""RPN as a detector: checkpoint layout and the zoo's ``rpn_head.*`` key
names, losses, and proposals as predictions."""
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

CONFIG = osp.join(REPO_ROOT, 'configs/rpn/rpn_r50_fpn_1x_coco.py')
SMALL = {
    'model.backbone.depth': 18,
    'model.backbone.init_cfg': None,
    'model.neck.in_channels': [64, 128, 256, 512],
    'model.neck.out_channels': 16,
    'model.rpn_head.in_channels': 16,
    'model.rpn_head.feat_channels': 16,
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


def test_state_dict_equals_mmdetection_checkpoint_layout():
    cfg = Config.fromfile(CONFIG)
    assert cfg.val_evaluator.metric == 'proposal_fast'
    got = {k: (tuple(v.shape), str(v.dtype).replace('torch.', ''))
           for k, v in build().state_dict().items()}
    assert got == read_compat('rpn_r50_fpn')
    assert len(got) == 340


def test_zoo_checkpoint_with_rpn_head_keys_loads_strictly(tmp_path):
    model = build(SMALL)
    state = {('rpn_head.' + k[len('bbox_head.'):]
              if k.startswith('bbox_head.') else k): torch.full_like(v, 0.25)
             if v.is_floating_point() else v
             for k, v in model.state_dict().items()}
    assert any(k.startswith('rpn_head.') for k in state)
    path = str(tmp_path / 'rpn_zoo.pth')
    torch.save({'state_dict': state, 'meta': {}}, path)
    load_checkpoint(model, path, strict=True)
    assert model.bbox_head.rpn_cls.weight.eq(0.25).all()
    fresh = build(SMALL)
    fresh.load_state_dict(state, strict=True)
    assert fresh.bbox_head.rpn_reg.bias.eq(0.25).all()


def test_losses_and_proposals():
    torch.manual_seed(0)
    model = build(SMALL)
    model.init_weights()
    ds = DetDataSample(metainfo=dict(img_id=0, img_shape=(96, 128),
                                     ori_shape=(192, 256),
                                     scale_factor=(0.5, 0.5)))
    ds.gt_instances = InstanceData(
        bboxes=torch.tensor([[10., 20., 60., 80.]]),
        labels=torch.tensor([2]))
    data = model.data_preprocessor(
        dict(inputs=[torch.randint(0, 255, (3, 96, 128), dtype=torch.uint8)],
             data_samples=[ds]), True)
    losses = model(**data, mode='loss')
    assert set(losses) == {'loss_rpn_cls', 'loss_rpn_bbox'}
    assert losses['loss_rpn_bbox'] > 0
    assert data['data_samples'][0].gt_instances.labels.tolist() == [2]
    model.eval()
    with torch.no_grad():
        pred = model(**data, mode='predict')[0].pred_instances
    assert 0 < len(pred) <= 1000
    assert pred.labels.unique().tolist() == [0]
    assert (pred.scores[:-1] >= pred.scores[1:]).all()
    # proposals are in the original image (twice the input)
    assert pred.bboxes[:, 2].max() <= 256 + 1e-3
    assert pred.bboxes[:, 3].max() <= 192 + 1e-3
    assert pred.bboxes[:, 2].max() > 128


def test_rpn_head_num_classes_is_forced_to_one():
    with pytest.warns(UserWarning, match='class-agnostic'):
        model = build(dict(SMALL, **{'model.rpn_head.num_classes': 80}))
    assert model.bbox_head.num_classes == 1
