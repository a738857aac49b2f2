"""RPNHead: parameter names, loss normalisation by the sampled count
(docs/rpn.md), class-agnostic labels, and proposals (sorted, inside the
image, NMS within each level only, small boxes dropped, rescaled)."""
import math

import pytest
import torch
from conftest import read_compat
from mmengine.structures import InstanceData

from detkit.models.dense_heads import RPNHead
from detkit.structures import DetDataSample, bbox_overlaps

TRAIN_CFG = dict(
    assigner=dict(type='MaxIoUAssigner', pos_iou_thr=0.7, neg_iou_thr=0.3,
                  min_pos_iou=0.3, match_low_quality=True, ignore_iof_thr=-1),
    sampler=dict(type='RandomSampler', num=256, pos_fraction=0.5,
                 neg_pos_ub=-1, add_gt_as_proposals=False),
    allowed_border=-1,
    pos_weight=-1)
TEST_CFG = dict(nms_pre=1000, max_per_img=1000,
                nms=dict(type='nms', iou_threshold=0.7), min_bbox_size=0)
STRIDES = (4, 8, 16, 32, 64)


def make_head(channels=4, **kwargs):
    return RPNHead(
        in_channels=channels,
        feat_channels=channels,
        anchor_generator=dict(type='AnchorGenerator', scales=[8],
                              ratios=[0.5, 1.0, 2.0], strides=list(STRIDES)),
        bbox_coder=dict(type='DeltaXYWHBBoxCoder',
                        target_means=[.0, .0, .0, .0],
                        target_stds=[1.0, 1.0, 1.0, 1.0]),
        loss_cls=dict(type='CrossEntropyLoss', use_sigmoid=True,
                      loss_weight=1.0),
        loss_bbox=dict(type='L1Loss', loss_weight=1.0),
        train_cfg=TRAIN_CFG,
        test_cfg=TEST_CFG,
        **kwargs)


def feats_for(hw, channels=4, batch=1):
    return [torch.randn(batch, channels, math.ceil(hw[0] / s),
                        math.ceil(hw[1] / s)) for s in STRIDES]


def sample(img_shape, boxes=(), labels=(), scale=(1., 1.), pad_shape=None):
    ds = DetDataSample(metainfo=dict(
        img_shape=img_shape, ori_shape=img_shape, scale_factor=scale,
        pad_shape=pad_shape or img_shape))
    ds.gt_instances = InstanceData(
        bboxes=torch.tensor(boxes, dtype=torch.float32).reshape(-1, 4),
        labels=torch.tensor(labels, dtype=torch.long))
    return ds


def test_parameter_names_match_mmdetection_checkpoints():
    head = RPNHead(in_channels=256, feat_channels=256,
                   anchor_generator=dict(type='AnchorGenerator', scales=[8],
                                         ratios=[0.5, 1.0, 2.0],
                                         strides=list(STRIDES)))
    got = {k: (tuple(v.shape), str(v.dtype).replace('torch.', ''))
           for k, v in head.state_dict().items()}
    for name, prefix in (('rpn_r50_fpn', 'bbox_head.'),
                         ('faster_rcnn_r50_fpn', 'rpn_head.')):
        expected = {k[len(prefix):]: v
                    for k, v in read_compat(name).items()
                    if k.startswith(prefix)}
        assert got == expected
    assert head.rpn_cls.out_channels == 3 and head.rpn_reg.out_channels == 12
    with pytest.raises(ValueError, match='num_classes must be 1'):
        RPNHead(in_channels=4, num_classes=2)
    deep = make_head(num_convs=2)
    assert len(deep.rpn_conv) == 2


def encode(anchor, gt):
    px, py = (anchor[0] + anchor[2]) / 2, (anchor[1] + anchor[3]) / 2
    pw, ph = anchor[2] - anchor[0], anchor[3] - anchor[1]
    gx, gy = (gt[0] + gt[2]) / 2, (gt[1] + gt[3]) / 2
    gw, gh = gt[2] - gt[0], gt[3] - gt[1]
    return [(gx - px) / pw, (gy - py) / ph, math.log(gw / pw),
            math.log(gh / ph)]


def test_loss_is_normalised_by_the_sampled_count_of_every_image():
    head = make_head()
    for p in head.parameters():
        torch.nn.init.zeros_(p)
    gt = [10., 14., 46., 40.]
    samples = [sample((64, 64), [gt], [2]), sample((64, 64))]
    feats = feats_for((64, 64), batch=2)
    losses = head.loss(feats, samples)
    assert set(losses) == {'loss_rpn_cls', 'loss_rpn_bbox'}

    # Positives of image 0 by hand: IoU >= 0.7 or equal to the GT's best.
    anchors = torch.cat(head.prior_generator.grid_priors(
        [f.shape[-2:] for f in feats]))
    ious = bbox_overlaps(anchors, torch.tensor([gt]))[:, 0]
    pos = (ious >= 0.7) | (ious == ious.max())
    num_pos = int(pos.sum())
    assert 1 <= num_pos <= 128
    # image 0: num_pos + (256 - num_pos) sampled, image 1: 256 negatives and
    # max(0, 1) = 1 for its missing positives
    avg_factor = num_pos + (256 - num_pos) + 1 + 256
    eps = 1.1920929e-07
    # zero logits: BCE = ln 2 for each of the 512 sampled anchors
    assert losses['loss_rpn_cls'].item() == pytest.approx(
        512 * math.log(2) / (avg_factor + eps), rel=1e-6)
    # zero deltas: L1 = sum of |targets| of the positives, same divisor
    target_sum = sum(
        sum(abs(v) for v in encode(a.tolist(), gt)) for a in anchors[pos])
    assert losses['loss_rpn_bbox'].item() == pytest.approx(
        target_sum / (avg_factor + eps), rel=1e-5)
    # the targets are class-agnostic: the samples are left untouched
    assert samples[0].gt_instances.labels.tolist() == [2]


def test_proposals_are_sorted_inside_the_image_and_at_most_max_per_img():
    torch.manual_seed(0)
    head = make_head()
    head.init_weights()
    feats = [f * 50 for f in feats_for((64, 64), batch=2)]
    samples = [sample((60, 50), pad_shape=(64, 64)), sample((64, 64))]
    cfg = dict(TEST_CFG, max_per_img=40)
    results = head.predict_by_feat(*head(feats),
                                   batch_img_metas=[s.metainfo
                                                    for s in samples],
                                   cfg=cfg)
    for res, (h, w) in zip(results, [(60, 50), (64, 64)]):
        assert len(res) == 40
        assert (res.scores[:-1] >= res.scores[1:]).all()
        b = res.bboxes
        assert (b[:, 0] >= 0).all() and (b[:, 2] <= w).all()
        assert (b[:, 1] >= 0).all() and (b[:, 3] <= h).all()
        assert ((b[:, 2] - b[:, 0]) > 0).all() and (
            (b[:, 3] - b[:, 1]) > 0).all()
        assert res.labels.tolist() == [0] * 40
    # min_bbox_size drops boxes not larger than it
    big = head.predict_by_feat(*head(feats),
                               batch_img_metas=[s.metainfo for s in samples],
                               cfg=dict(TEST_CFG, min_bbox_size=20))[0]
    assert ((big.bboxes[:, 2:] - big.bboxes[:, :2]) > 20).all()
    every = head.predict_by_feat(*head(feats),
                                 batch_img_metas=[s.metainfo
                                                  for s in samples],
                                 cfg=TEST_CFG)[0]
    small = (every.bboxes[:, 2:] - every.bboxes[:, :2] <= 20).any(1)
    assert 0 < len(big) and small.any()


def crafted_outputs():
    """Level-0 anchor (y=2, x=2, ratio 1) grown x2 and the level-1 anchor
    at (1, 1): both become [-24, -24, 40, 40] -> clipped [0, 0, 40, 40]."""
    sizes = [(16, 16), (8, 8), (4, 4), (2, 2), (1, 1)]
    cls_scores = [torch.full((1, 3, h, w), -10.) for h, w in sizes]
    bbox_preds = [torch.zeros(1, 12, h, w) for h, w in sizes]
    cls_scores[0][0, 1, 2, 2] = 10.
    bbox_preds[0][0, 6:8, 2, 2] = math.log(2)
    cls_scores[1][0, 1, 1, 1] = 10.
    # a level-0 neighbour, lower score, IoU 1600 / 1760 with the box above
    cls_scores[0][0, 1, 2, 3] = 9.
    bbox_preds[0][0, 6:8, 2, 3] = math.log(2)
    return cls_scores, bbox_preds


def test_nms_runs_within_each_level_only():
    head = make_head()
    cls_scores, bbox_preds = crafted_outputs()
    meta = sample((64, 64)).metainfo
    res = head.predict_by_feat(cls_scores, bbox_preds,
                               batch_img_metas=[meta])[0]
    top = res[res.scores > 0.9]
    # the two identical boxes of different levels both survive; the
    # neighbour on level 0 is suppressed by its own level's better box
    assert len(top) == 2
    torch.testing.assert_close(top.bboxes,
                               torch.tensor([[0., 0., 40., 40.]] * 2))
    assert top.scores.tolist() == pytest.approx([1 / (1 + math.exp(-10))] * 2)
    # nms_pre=1: one candidate per level, none suppressed across levels
    one = head.predict_by_feat(cls_scores, bbox_preds,
                               batch_img_metas=[meta],
                               cfg=dict(TEST_CFG, nms_pre=1))[0]
    assert len(one) == 5


def test_rescale_divides_by_the_scale_factor():
    head = make_head()
    cls_scores, bbox_preds = crafted_outputs()
    meta = sample((64, 64), scale=(0.5, 0.25)).metainfo
    res = head.predict_by_feat(cls_scores, bbox_preds,
                               batch_img_metas=[meta], rescale=True)[0]
    torch.testing.assert_close(res.bboxes[:2],
                               torch.tensor([[0., 0., 80., 160.]] * 2))
