"""The hooks of AnchorHead's one loss / predict skeleton that the next heads
(FCOS, ATSS, a head serving as RPN) rely on: a third per-level output
(score factors) in the loss and in prediction, use_as_rpn, and the checks
of shared layers."""
import math

import pytest
import torch
import torch.nn as nn
from mmengine.structures import InstanceData

from detkit.models.dense_heads import AnchorHead, RetinaHead
from detkit.models.utils import levels_to_images, pad_gts
from detkit.structures import DetDataSample

TRAIN_CFG = dict(
    assigner=dict(type='MaxIoUAssigner', pos_iou_thr=0.5, neg_iou_thr=0.4,
                  min_pos_iou=0, ignore_iof_thr=-1),
    sampler=dict(type='PseudoSampler'), allowed_border=-1, pos_weight=-1)
TEST_CFG = dict(nms_pre=1, score_thr=0.05,
                nms=dict(type='nms', iou_threshold=0.5), max_per_img=10)
GENERATOR = dict(type='AnchorGenerator', scales=[4], ratios=[1.0],
                 strides=[8, 16])


class CenternessHead(AnchorHead):
    """AnchorHead with a third 1x1 output, as FCOS / ATSS have."""

    def _init_layers(self):
        super()._init_layers()
        self.conv_centerness = nn.Conv2d(self.in_channels, 1, 1)

    def forward_single(self, x):
        return (*super().forward_single(x), self.conv_centerness(x))

    def loss_by_feat(self, cls_scores, bbox_preds, centernesses,
                     batch_gt_instances, batch_img_metas,
                     batch_gt_instances_ignore=None):
        return super().loss_by_feat(
            cls_scores, bbox_preds, batch_gt_instances, batch_img_metas,
            batch_gt_instances_ignore, score_factors=centernesses)

    def loss_score_factor_term(self, score_factor, priors, targets):
        # a stand-in for a centerness loss: the positives' mean logit
        return score_factor[targets['pos_mask']].mean()


def make_head(cls=CenternessHead, **kwargs):
    return cls(num_classes=2, in_channels=4, anchor_generator=GENERATOR,
               loss_cls=dict(type='FocalLoss', use_sigmoid=True),
               loss_bbox=dict(type='L1Loss'), train_cfg=TRAIN_CFG,
               test_cfg=TEST_CFG, **kwargs)


def sample(boxes=(), labels=()):
    ds = DetDataSample(metainfo=dict(img_shape=(32, 32), ori_shape=(32, 32),
                                     pad_shape=(32, 32), scale_factor=(1.,
                                                                       1.)))
    ds.gt_instances = InstanceData(
        bboxes=torch.tensor(boxes, dtype=torch.float32).reshape(-1, 4),
        labels=torch.tensor(labels, dtype=torch.long))
    return ds


def feats():
    g = torch.Generator().manual_seed(0)
    return [torch.randn(1, 4, 4, 4, generator=g),
            torch.randn(1, 4, 2, 2, generator=g)]


def test_a_third_output_gets_its_own_named_loss_term():
    torch.manual_seed(0)
    head = make_head()
    x = feats()
    # the level-0 anchor at (y=1, x=1) is (-8, -8, 24, 24) (size 32
    # centred on (8, 8)); a GT equal to it makes that anchor positive
    samples = [sample([[-8., -8., 24., 24.]], [1])]
    losses = head.loss(x, samples)
    assert list(losses) == ['loss_cls', 'loss_bbox', 'loss_centerness']
    _, _, centerness = head(x)
    flat = levels_to_images(centerness, 1)[0, :, 0]
    anchors, valid, _ = head.get_priors([f.shape[-2:] for f in x],
                                        [samples[0].metainfo], 'cpu')
    pos = head.get_targets(anchors, valid,
                           pad_gts([samples[0].gt_instances]))['pos_mask'][0]
    assert pos.sum() >= 1
    assert losses['loss_centerness'].item() == pytest.approx(
        flat[pos].mean().item())
    # a head without the hook says so
    with pytest.raises(NotImplementedError, match='loss_score_factor_term'):
        AnchorHead.loss_score_factor_term(head, flat, anchors, {})


def test_use_as_rpn_makes_targets_class_agnostic_and_names_rpn_losses():
    torch.manual_seed(0)
    head = make_head()
    x = feats()
    samples = [sample([[-8., -8., 24., 24.]], [1])]
    before = head.loss(x, samples)
    head.use_as_rpn()
    after = head.loss(x, samples)
    # mmdetection's names for a dense head serving as RPN: 'rpn_' + key
    assert list(after) == ['rpn_loss_cls', 'rpn_loss_bbox',
                           'rpn_loss_centerness']
    # the same targets but label 0 instead of 1: another focal loss value,
    # the same box and centerness terms
    assert after['rpn_loss_cls'].item() != before['loss_cls'].item()
    assert torch.equal(after['rpn_loss_bbox'], before['loss_bbox'])
    torch.manual_seed(0)
    zeroed = make_head()
    assert zeroed.loss(x, [sample([[-8., -8., 24., 24.]], [0])])[
        'loss_cls'].item() == after['rpn_loss_cls'].item()
    # names already about the RPN stay as they are (RPNHead's too)
    head.use_as_rpn()
    assert head.loss_names['cls'] == 'rpn_loss_cls'
    head.loss_names = dict(cls='loss_rpn_cls', bbox='loss_rpn_bbox')
    head.use_as_rpn()
    assert head.loss_names == dict(cls='loss_rpn_cls', bbox='loss_rpn_bbox')


def test_score_factors_multiply_after_the_top_k():
    head = make_head()
    for p in head.parameters():
        nn.init.zeros_(p)
    sizes = [(4, 4), (2, 2)]
    cls_scores = [torch.full((1, 2, h, w), -10.) for h, w in sizes]
    bbox_preds = [torch.zeros(1, 4, h, w) for h, w in sizes]
    factors = [torch.zeros(1, 1, h, w) for h, w in sizes]
    # level 0: class 1 at (0, 0) scores sigmoid(3), class 0 at (2, 2)
    # sigmoid(2); the first has a tiny score factor
    cls_scores[0][0, 1, 0, 0] = 3.
    cls_scores[0][0, 0, 2, 2] = 2.
    factors[0][0, 0, 0, 0] = -6.
    meta = [sample().metainfo]
    res = head.predict_by_feat(cls_scores, bbox_preds, factors,
                               batch_img_metas=meta)[0]
    # nms_pre=1 picks by class score alone (the first pair), then the
    # factor scales it: 0.9526 * 0.00247 = 0.00235; level 1 has nothing
    # above score_thr
    sig = 1 / (1 + math.exp(-3.))
    assert res.labels.tolist() == [1]
    assert res.scores.item() == pytest.approx(sig / (1 + math.exp(6.)))
    # without factors the same candidate keeps its class score
    plain = head.predict_by_feat(cls_scores, bbox_preds,
                                 batch_img_metas=meta)[0]
    assert plain.scores.item() == pytest.approx(sig)


def test_shared_layers_need_one_prior_count_per_location():
    assert make_head(cls=RetinaHead).num_base_priors == [1, 1]
    # SSD anchors: 4 per location on one level, 6 on the other
    ssd_anchors = dict(type='SSDAnchorGenerator', scale_major=False,
                       strides=[8, 16], ratios=[[2], [2, 3]],
                       min_sizes=[8, 16], max_sizes=[16, 32])
    with pytest.raises(ValueError, match=r'same number of priors.*\[4, 6\]'):
        RetinaHead(num_classes=2, in_channels=4,
                   anchor_generator=ssd_anchors)
