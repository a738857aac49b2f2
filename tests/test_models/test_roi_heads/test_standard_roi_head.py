"""StandardRoIHead: batched assignment, per-image sampling (counts and the
positive fraction), RoI order, images without ground truth, loss
normalisation over the whole batch, and prediction."""
import math

import pytest
import torch
from mmengine.structures import InstanceData

from detkit.models.roi_heads import StandardRoIHead
from detkit.models.task_modules.assigners import MaxIoUAssigner
from detkit.structures import DetDataSample

NUM_CLASSES = 3
RCNN_TRAIN = dict(
    assigner=dict(type='MaxIoUAssigner', pos_iou_thr=0.5, neg_iou_thr=0.5,
                  min_pos_iou=0.5, match_low_quality=False,
                  ignore_iof_thr=-1),
    sampler=dict(type='RandomSampler', num=512, pos_fraction=0.25,
                 neg_pos_ub=-1, add_gt_as_proposals=True),
    pos_weight=-1)
RCNN_TEST = dict(score_thr=0.05, nms=dict(type='nms', iou_threshold=0.5),
                 max_per_img=100)


def make_head(channels=4):
    return StandardRoIHead(
        bbox_roi_extractor=dict(
            type='SingleRoIExtractor',
            roi_layer=dict(type='RoIAlign', output_size=7, sampling_ratio=0),
            out_channels=channels,
            featmap_strides=[4, 8, 16, 32]),
        bbox_head=dict(
            type='Shared2FCBBoxHead', in_channels=channels,
            fc_out_channels=16, roi_feat_size=7, num_classes=NUM_CLASSES,
            bbox_coder=dict(type='DeltaXYWHBBoxCoder',
                            target_means=[0., 0., 0., 0.],
                            target_stds=[0.1, 0.1, 0.2, 0.2]),
            loss_cls=dict(type='CrossEntropyLoss', use_sigmoid=False,
                          loss_weight=1.0),
            loss_bbox=dict(type='L1Loss', loss_weight=1.0)),
        train_cfg=RCNN_TRAIN,
        test_cfg=RCNN_TEST)


def feats(batch=2, channels=4, size=256):
    return tuple(torch.randn(batch, channels, size // s, size // s)
                 for s in (4, 8, 16, 32, 64))


def sample(boxes=(), labels=(), img_shape=(256, 256), scale=(1., 1.)):
    ds = DetDataSample(metainfo=dict(img_shape=img_shape,
                                     ori_shape=img_shape,
                                     scale_factor=scale))
    ds.gt_instances = InstanceData(
        bboxes=torch.tensor(boxes, dtype=torch.float32).reshape(-1, 4),
        labels=torch.tensor(labels, dtype=torch.long))
    return ds


def proposals_near(gt, num_pos, num_neg, seed=0):
    """``num_pos`` jittered copies of ``gt`` (IoU > 0.5) and ``num_neg``
    small boxes far from it (IoU 0)."""
    g = torch.Generator().manual_seed(seed)
    gt = torch.tensor(gt)
    pos = gt + torch.rand(num_pos, 4, generator=g) * 4 - 2
    xy = torch.rand(num_neg, 2, generator=g) * 80 + 160
    neg = torch.cat([xy, xy + 10], 1)
    boxes = torch.cat([pos, neg])
    return InstanceData(bboxes=boxes, scores=torch.ones(len(boxes)))


def test_sampler_counts_and_positive_fraction():
    head = make_head()
    gts = [[20., 20., 100., 90.], [30., 120., 90., 200.]]
    props = proposals_near(gts[0], 150, 300)
    data = [sample(gts, [1, 2])]
    results = head.sample([props], [data[0].gt_instances])
    res = results[0]
    # 150 + 2 (GTs prepended) positive candidates -> 128 = int(512 * 0.25);
    # then 512 - 128 = 384 negatives wanted, 300 available
    assert len(res.pos_inds) == 128 and len(res.neg_inds) == 300
    assert res.avg_factor == 428
    assert res.pos_inds.tolist() == sorted(res.pos_inds.tolist())
    # RoIs are the positives then the negatives
    assert torch.equal(res.priors[:128], res.pos_priors)
    # with few positive candidates all are taken, GTs included
    res = head.sample([proposals_near(gts[0], 10, 800)],
                      [data[0].gt_instances])[0]
    assert len(res.pos_inds) == 12 and len(res.neg_inds) == 500
    assert res.pos_is_gt.sum() == 2
    assert set(res.pos_gt_labels.tolist()) == {1, 2}


def test_batched_assignment_equals_per_image_assignment():
    head = make_head()
    torch.manual_seed(3)
    props = [proposals_near([20., 20., 100., 90.], 40, 60, seed=1),
             proposals_near([150., 40., 220., 120.], 5, 30, seed=2)]
    gts = [sample([[20., 20., 100., 90.]], [0]).gt_instances,
           sample([[150., 40., 220., 120.], [10., 10., 40., 50.]],
                  [1, 2]).gt_instances]
    torch.manual_seed(0)
    batched = head.sample(props, gts)
    assigner = MaxIoUAssigner(0.5, 0.5, 0.5, match_low_quality=False)
    torch.manual_seed(0)
    for res, prop, gt in zip(batched, props, gts):
        single = assigner.assign(InstanceData(priors=prop.bboxes), gt)
        expected = head.bbox_sampler.sample(
            single, InstanceData(priors=prop.bboxes), gt)
        assert torch.equal(res.pos_inds, expected.pos_inds)
        assert torch.equal(res.neg_inds, expected.neg_inds)
        assert torch.equal(res.pos_assigned_gt_inds,
                           expected.pos_assigned_gt_inds)


def test_batch_with_an_image_without_gt():
    torch.manual_seed(0)
    head = make_head()
    head.init_weights()
    gt_box = [20., 20., 100., 90.]
    props = [proposals_near(gt_box, 20, 100, seed=1),
             proposals_near(gt_box, 20, 100, seed=2)]
    data = [sample([gt_box], [2]), sample()]
    results = head.sample(props, [d.gt_instances for d in data])
    assert (len(results[0].pos_inds), len(results[0].neg_inds)) == (21, 100)
    # no GT: nothing is prepended and all 120 proposals are negatives
    assert (len(results[1].pos_inds), len(results[1].neg_inds)) == (0, 120)
    losses = head.loss(feats(), props, data)
    assert set(losses) == {'loss_cls', 'acc', 'loss_bbox'}
    assert all(torch.isfinite(v).all() for v in losses.values())

    # the same losses by hand over all 241 RoIs of the batch
    torch.manual_seed(0)
    x = feats()
    torch.manual_seed(5)
    losses = head.loss(x, props, data)
    torch.manual_seed(5)
    sampled = head.sample(props, [d.gt_instances for d in data])
    bbox = head.bbox_loss(x, sampled)
    padded = head.bbox_head.get_targets(
        sampled.priors, sampled.gt_bboxes, sampled.assign_result,
        sampled.pos_mask, sampled.neg_mask, None)
    img, cand = sampled.roi_index()  # RoI order
    labels = padded['labels'][img, cand]
    targets = padded['bbox_targets'][img, cand]
    cls_score, bbox_pred = bbox['cls_score'], bbox['bbox_pred']
    assert labels.tolist() == [2] * 21 + [3] * 220
    ce = torch.nn.functional.cross_entropy(cls_score, labels,
                                           reduction='sum') / 241
    own = bbox_pred.reshape(241, 3, 4)[:21, 2]
    l1 = (own - targets[:21]).abs().sum() / (241 + torch.finfo().eps)
    assert losses['loss_cls'].item() == pytest.approx(ce.item(), rel=1e-5)
    assert losses['loss_bbox'].item() == pytest.approx(l1.item(), rel=1e-5)


def test_all_background_image():
    torch.manual_seed(0)
    head = make_head()
    head.init_weights()
    for p in head.bbox_head.parameters():
        torch.nn.init.zeros_(p)
    props = [proposals_near([20., 20., 100., 90.], 10, 30)]
    losses = head.loss(feats(batch=1), props, [sample()])
    # zero logits: CE = ln 4 for every RoI, all of them background
    assert losses['loss_cls'].item() == pytest.approx(math.log(4))
    assert losses['loss_bbox'].item() == 0
    # argmax of four equal scores is class 0, never the background 3
    assert losses['acc'].item() == 0


def test_predict_rescales_and_limits_detections():
    torch.manual_seed(0)
    head = make_head()
    head.init_weights()
    props = [proposals_near([20., 20., 100., 90.], 5, 20),
             InstanceData(bboxes=torch.zeros((0, 4)), scores=torch.zeros(0))]
    data = [sample(img_shape=(256, 256), scale=(0.5, 0.5)), sample()]
    results = head.predict(feats(), props, data, rescale=True)
    assert len(results[1]) == 0
    res = results[0]
    assert 0 < len(res) <= 100
    assert (res.scores[:-1] >= res.scores[1:]).all()
    assert (res.scores > 0.05).all()
    # boxes clipped to the 256 x 256 input, then doubled
    assert res.bboxes.max() <= 512 and res.bboxes.min() >= 0
    cls_score, bbox_pred = head.forward(feats(), props)
    assert cls_score.shape == (25, 4) and bbox_pred.shape == (25, 12)


def test_unsupported_branches_are_named():
    with pytest.raises(ValueError, match='mask_head'):
        StandardRoIHead(bbox_roi_extractor={}, bbox_head={},
                        mask_head=dict(type='FCNMaskHead'))
