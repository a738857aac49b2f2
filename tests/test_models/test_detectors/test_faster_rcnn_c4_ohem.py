"""Faster R-CNN C4 and OHEM from their configs: the C4 layout (one stride-16
level, caffe-style input, ResNet stage 4 as the RoI head, backbone weights
loaded into both), one training step and a prediction; OHEM's sampled RoIs
in a real training step are the hardest by the head's loss."""
import os.path as osp

import pytest
import torch
import torchvision
from conftest import REPO_ROOT, read_compat
from mmengine.config import Config
from mmengine.optim import OptimWrapper
from mmengine.registry import DefaultScope
from mmengine.structures import InstanceData

from detkit.models.backbones import ResNet
from detkit.models.task_modules.samplers import OHEMSampler
from detkit.registry import MODELS
from detkit.structures import DetDataSample

C4_CONFIGS = ['faster_rcnn/faster-rcnn_r50-caffe_c4-1x_coco.py',
              'faster_rcnn/faster-rcnn_r50-caffe-c4_ms-1x_coco.py']
OHEM_CONFIG = 'faster_rcnn/faster-rcnn_r50_fpn_ohem_1x_coco.py'
# Real widths; fewer proposals and RoIs so that ResNet stage 4 on each
# 14x14 RoI stays cheap on a CPU.
C4_SMALL = {
    'model.backbone.init_cfg': None,
    'model.roi_head.shared_head.init_cfg': None,
    'model.roi_head.bbox_head.num_classes': 3,
    'model.train_cfg.rpn_proposal.max_per_img': 32,
    'model.train_cfg.rcnn.sampler.num': 8,
    'model.test_cfg.rpn.max_per_img': 8,
}
# The R-50 FPN model narrowed (ResNet-18, 16 channels), OHEM choosing 16
# RoIs per image (at most 4 positive) so that both kinds are mined.
OHEM_SMALL = {
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
    'model.train_cfg.rcnn.sampler.num': 16,
}


@pytest.fixture(autouse=True)
def one_thread():
    # On the shared 2-core CI machine intra-op threads mostly wait for each
    # other; one thread runs these models faster.
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def build(rel, options=None):
    cfg = Config.fromfile(osp.join(REPO_ROOT, 'configs', rel))
    if options:
        cfg.merge_from_dict(options)
    with DefaultScope.overwrite_default_scope('detkit'):
        return MODELS.build(cfg.model)


def batch(sizes=((96, 128), (80, 112))):
    gen = torch.Generator().manual_seed(0)
    inputs, samples = [], []
    for i, (h, w) in enumerate(sizes):
        inputs.append(torch.randint(0, 256, (3, h, w), dtype=torch.uint8,
                                    generator=gen))
        sample = DetDataSample(metainfo=dict(
            img_id=i, ori_shape=(h, w), img_shape=(h, w),
            scale_factor=(1., 1.)))
        sample.gt_instances = InstanceData(
            bboxes=torch.tensor([[10., 12., 60., 70.], [64., 20., 110.,
                                                        75.]]),
            labels=torch.tensor([0, 2]))
        samples.append(sample)
    return dict(inputs=inputs, data_samples=samples)


def snapshot(model):
    return {k: v.clone() for k, v in model.state_dict().items()}


# --------------------------------------------------------------------- C4
def test_c4_layout_and_key_list():
    model = build(C4_CONFIGS[0])
    expected = read_compat('configs/' + C4_CONFIGS[0][:-len('.py')])
    got = {k: (tuple(v.shape), str(v.dtype).replace('torch.', ''))
           for k, v in model.state_dict().items()}
    assert got == expected and len(got) == 328
    # ResNet-50 stages 1-3 only; 15 anchors on the one stride-16 level
    assert model.backbone.res_layers == ['layer1', 'layer2', 'layer3']
    assert model.rpn_head.num_base_priors == [15]
    assert model.rpn_head.prior_generator.strides == [(16, 16)]
    extractor = model.roi_head.bbox_roi_extractor
    assert extractor.num_inputs == 1
    assert extractor.roi_layers[0].output_size == (14, 14)
    assert model.roi_head.with_shared_head
    assert model.roi_head.bbox_head.with_avg_pool


def test_c4_pools_every_roi_from_its_one_level():
    """With a single level there is no FPN level mapping: small and huge
    RoIs alike are pooled from C4 at scale 1/16."""
    model = build(C4_CONFIGS[0])
    extractor = model.roi_head.bbox_roi_extractor
    feat = torch.randn(2, 1024, 6, 8)
    rois = torch.tensor([[0., 4., 4., 20., 20.], [1., 0., 0., 128., 96.],
                         [0., 30., 10., 600., 500.]])
    expected = torchvision.ops.roi_align(feat, rois, 14, 1 / 16, 0,
                                         aligned=True)
    assert torch.equal(extractor([feat], rois), expected)


def test_c4_input_is_caffe_style():
    model = build(C4_CONFIGS[0], C4_SMALL)
    data = batch()
    out = model.data_preprocessor(data, False)
    mean = torch.tensor([103.530, 116.280, 123.675])[:, None, None]
    # BGR kept (no channel flip), mean subtracted, std 1, padded to 32
    assert out['inputs'].shape == (2, 3, 96, 128)
    assert torch.allclose(out['inputs'][0], data['inputs'][0].float() - mean)
    assert torch.allclose(out['inputs'][1, :, :80, :112],
                          data['inputs'][1].float() - mean)
    assert out['inputs'][1, :, 80:].eq(0).all()


@pytest.mark.parametrize('rel', C4_CONFIGS)
def test_c4_trains_one_step_and_predicts(rel):
    torch.manual_seed(0)
    model = build(rel, C4_SMALL)
    model.init_weights()
    before = snapshot(model)
    optim = OptimWrapper(torch.optim.SGD(model.parameters(), lr=0.01))
    model.train()
    logs = model.train_step(batch(), optim)
    assert list(logs) == ['loss', 'loss_rpn_cls', 'loss_rpn_bbox',
                          'loss_cls', 'acc', 'loss_bbox']
    assert all(torch.isfinite(v) for v in logs.values())
    after = model.state_dict()
    changed = {k for k in before if not torch.equal(before[k], after[k])}
    # stage 4 and the heads learn, and stages 2-3 of the backbone (its
    # residual branches start at zero without pretrained weights, the
    # projections do not); the frozen stem and layer1, every norm
    # (requires_grad=False, norm_eval) and its statistics stay
    assert 'roi_head.shared_head.layer4.2.conv3.weight' in changed
    assert {'backbone.layer2.0.downsample.0.weight',
            'backbone.layer3.0.downsample.0.weight'} <= changed
    assert {'rpn_head.rpn_conv.weight', 'roi_head.bbox_head.fc_cls.weight',
            'roi_head.bbox_head.fc_reg.weight'} <= changed
    assert not [k for k in changed if '.bn' in k or 'downsample.1' in k
                or k.startswith(('backbone.conv1', 'backbone.layer1'))]

    model.eval()
    bbox_head = model.roi_head.bbox_head
    with torch.no_grad():
        # every RoI: scores [10, 0, 0, 0] and zero deltas, so each
        # detection is a proposal of class 0 with probability
        # e^10 / (e^10 + 3)
        for fc in (bbox_head.fc_cls, bbox_head.fc_reg):
            fc.weight.zero_()
            fc.bias.zero_()
        bbox_head.fc_cls.bias[0] = 10.
        data = model.data_preprocessor(batch(), False)
        feats = model.extract_feat(data['inputs'])
        proposals = model.rpn_head.predict(feats, data['data_samples'])
        out = model.predict(data['inputs'], data['data_samples'])
    expected_score = torch.exp(torch.tensor(10.)) / (
        torch.exp(torch.tensor(10.)) + 3)
    for sample, props in zip(out, proposals):
        pred = sample.pred_instances
        assert 1 <= len(pred) <= len(props.bboxes) <= 8
        assert pred.labels.eq(0).all()
        assert torch.allclose(pred.scores, expected_score.expand(len(pred)))
        distance = torch.cdist(pred.bboxes, props.bboxes)
        assert distance.min(1).values.max() < 1e-3
        # class-wise NMS at IoU 0.5 left no two overlapping more
        iou = torchvision.ops.box_iou(pred.bboxes, pred.bboxes)
        assert (iou.triu(1) <= 0.5).all()


def test_c4_backbone_checkpoint_fills_backbone_and_shared_head(
        tmp_path, monkeypatch):
    """The config names ``open-mmlab://detectron2/resnet50_caffe`` for the
    backbone and the shared head: one ResNet-50 file (here written by the
    test into the hub cache, where that name resolves) gives the backbone
    its stem and stages 1-3 and the shared head its ``layer4``."""
    monkeypatch.setenv('TORCH_HOME', str(tmp_path))
    monkeypatch.setattr(torch.hub, '_hub_dir', None)
    cache = tmp_path / 'hub' / 'checkpoints'
    cache.mkdir(parents=True)
    resnet = ResNet(50, style='caffe',
                    norm_cfg=dict(type='BN', requires_grad=False))
    gen = torch.Generator().manual_seed(1)
    state = {k: torch.randn(v.shape, generator=gen)
             if v.is_floating_point() else v
             for k, v in resnet.state_dict().items()}
    torch.save(state, cache / 'resnet50_msra-5891d200.pth')
    model = build(C4_CONFIGS[0])
    model.init_weights()
    got = model.state_dict()
    for key, value in state.items():
        where = ('roi_head.shared_head.' if key.startswith('layer4.') else
                 'backbone.')
        assert torch.equal(got[where + key], value), key


# ------------------------------------------------------------------- OHEM
def test_ohem_config_builds_the_sampler_with_its_head():
    model = build(OHEM_CONFIG)
    sampler = model.roi_head.bbox_sampler
    assert isinstance(sampler, OHEMSampler)
    assert sampler.context is model.roi_head
    assert (sampler.num, sampler.pos_fraction, sampler.neg_pos_ub,
            sampler.add_gt_as_proposals, sampler.loss_key) == (
                512, 0.25, -1, True, 'loss_cls')
    assert sampler.avg_factor_with_neg


def test_ohem_training_step_keeps_the_hardest_rois():
    torch.manual_seed(0)
    model = build(OHEM_CONFIG, OHEM_SMALL)
    model.init_weights()
    head = model.roi_head
    seen = []
    sample = head.sample

    def record(*args, **kwargs):
        seen.append((sample(*args, **kwargs), kwargs['feats']))
        return seen[-1][0]

    head.sample = record
    data = model.data_preprocessor(batch(), True)
    model.train()
    losses = model(**data, mode='loss')
    assert list(losses) == ['loss_rpn_cls', 'loss_rpn_bbox', 'loss_cls',
                            'acc', 'loss_bbox']
    assert all(torch.isfinite(v).all() for v in losses.values())

    # every candidate's loss with the weights the sampler saw
    (res, feats), = seen
    valid = res.priors_valid
    img, cand = valid.nonzero(as_tuple=True)
    gt_inds = res.assign_result.gt_inds[img, cand]
    labels = torch.where(gt_inds > 0, res.assign_result.labels[img, cand],
                         head.bbox_head.num_classes)
    rois = torch.cat([img[:, None].float(), res.priors[img, cand]], 1)
    with torch.no_grad():
        cls_score = head._bbox_forward(feats, rois)['cls_score']
        loss = head.bbox_head.loss(
            cls_score, None, rois, labels, torch.ones(len(rois)), None, None,
            reduction_override='none')['loss_cls']
    picked = (res.pos_mask | res.neg_mask)[img, cand]
    mined = 0
    for i in range(2):
        num_pos = int(res.pos_mask[i].sum())
        for kind, wanted in ((gt_inds > 0, 4), (gt_inds == 0, 16 - num_pos)):
            group = kind & (img == i)
            kept = picked[group]
            assert int(kept.sum()) == min(int(group.sum()), wanted)
            if int(group.sum()) > wanted:
                mined += 1
                # no left-out candidate is harder than a kept one
                assert loss[group][kept].min() >= (
                    loss[group][~kept].max() - 1e-5)
    assert mined == 4  # both kinds of both images were mined

    optim = OptimWrapper(torch.optim.SGD(model.parameters(), lr=0.01))
    before = snapshot(model)
    logs = model.train_step(batch(), optim)
    assert all(torch.isfinite(v) for v in logs.values())
    key = 'roi_head.bbox_head.fc_cls.weight'
    assert not torch.equal(before[key], model.state_dict()[key])
