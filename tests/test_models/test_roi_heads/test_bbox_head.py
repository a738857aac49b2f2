"""Shared2FCBBoxHead / BBoxHead: parameter names, targets in RoI order,
class-specific box selection, loss normalisation (by all sampled RoIs,
docs/faster_rcnn.md) and decoding + per-class NMS."""
import math

import pytest
import torch
import torch.nn.functional as F
from conftest import read_compat

from detkit.models.roi_heads.bbox_heads import (BBoxHead, ConvFCBBoxHead,
                                                Shared2FCBBoxHead,
                                                Shared4Conv1FCBBoxHead)
from detkit.models.task_modules.assigners.assign_result import AssignResult
from detkit.models.task_modules.samplers import BatchSamplingResult

L1 = dict(type='L1Loss', loss_weight=1.0)
CE = dict(type='CrossEntropyLoss', use_sigmoid=False, loss_weight=1.0)


def small_head(num_classes=3, **kwargs):
    return Shared2FCBBoxHead(
        in_channels=2, fc_out_channels=8, roi_feat_size=7,
        num_classes=num_classes, loss_cls=CE, loss_bbox=L1, **kwargs)


def test_parameter_names_match_mmdetection_checkpoint():
    head = Shared2FCBBoxHead(in_channels=256, fc_out_channels=1024,
                             roi_feat_size=7, num_classes=80)
    expected = {
        k[len('roi_head.bbox_head.'):]: v
        for k, v in read_compat('faster_rcnn_r50_fpn').items()
        if k.startswith('roi_head.bbox_head.')
    }
    got = {k: (tuple(v.shape), str(v.dtype).replace('torch.', ''))
           for k, v in head.state_dict().items()}
    assert got == expected
    assert got['shared_fcs.0.weight'][0] == (1024, 12544)


def test_init_and_output_layout():
    torch.manual_seed(0)
    head = small_head()
    head.init_weights()
    assert head.fc_cls.bias.abs().sum() == 0 and head.fc_reg.bias.abs().sum(
    ) == 0
    # Xavier-uniform bound sqrt(6 / (fan_in + fan_out)) for the shared fcs
    bound = math.sqrt(6 / (2 * 49 + 8))
    assert head.shared_fcs[0].weight.abs().max() <= bound
    assert head.shared_fcs[0].weight.abs().max() > 0.9 * bound
    assert head.fc_reg.weight.std() < 0.003 < head.fc_cls.weight.std() < 0.03
    cls, reg = head(torch.randn(5, 2, 7, 7))
    assert cls.shape == (5, 4) and reg.shape == (5, 12)
    _, reg = small_head(reg_class_agnostic=True)(torch.randn(5, 2, 7, 7))
    assert reg.shape == (5, 4)
    # flattening is C, H, W order: the first fc sees x.reshape(R, -1)
    x = torch.randn(2, 2, 7, 7)
    first = F.relu(head.shared_fcs[0](x.reshape(2, -1)))
    second = F.relu(head.shared_fcs[1](first))
    torch.testing.assert_close(head(x)[0], head.fc_cls(second))


def test_convfc_branch_dimensions():
    head = ConvFCBBoxHead(num_shared_convs=1, num_cls_fcs=1, num_reg_convs=1,
                          in_channels=2, conv_out_channels=4,
                          fc_out_channels=6, num_classes=3)
    assert head.cls_fcs[0].in_features == 4 * 49
    assert head.fc_cls.in_features == 6
    assert head.fc_reg.in_features == 4 * 49  # conv branch, flattened
    cls, reg = head(torch.randn(3, 2, 7, 7))
    assert cls.shape == (3, 4) and reg.shape == (3, 12)
    with pytest.raises(ValueError, match='num_shared_fcs'):
        ConvFCBBoxHead(num_shared_fcs=1, num_cls_convs=1)
    gn = Shared4Conv1FCBBoxHead(
        fc_out_channels=8, in_channels=2, conv_out_channels=4, num_classes=3,
        norm_cfg=dict(type='GN', num_groups=2, requires_grad=True))
    assert len(gn.shared_convs) == 4 and len(gn.shared_fcs) == 1
    assert gn.shared_fcs[0].in_features == 4 * 49
    assert 'shared_convs.3.gn.weight' in gn.state_dict()
    cls, reg = gn(torch.randn(3, 2, 7, 7))
    assert cls.shape == (3, 4) and reg.shape == (3, 12)


def sampling_result(pos_priors, pos_gt, pos_labels, neg_priors):
    """One image's candidates [pos ; neg] with pos assigned to pos_gt (one
    GT per positive), as tensors."""
    num_pos, num_neg = len(pos_priors), len(neg_priors)
    priors = torch.tensor(pos_priors + neg_priors).reshape(-1, 4)
    gt = torch.tensor(pos_gt).reshape(-1, 4)
    gt_inds = torch.cat([torch.arange(1, num_pos + 1),
                         torch.zeros(num_neg, dtype=torch.long)])
    labels = torch.cat([torch.tensor(pos_labels, dtype=torch.long),
                        torch.full((num_neg, ), -1)])
    return priors, gt, gt_inds, labels


def batch(*images):
    """The images' candidates as the padded batch the RoI head trains on
    (every candidate sampled)."""
    num = max(len(img[0]) for img in images)
    num_gts = max(len(img[1]) for img in images)
    priors = torch.zeros(len(images), num, 4)
    gts = torch.zeros(len(images), num_gts, 4)
    gt_inds = torch.full((len(images), num), -1)
    labels = torch.full((len(images), num), -1)
    valid = torch.zeros(len(images), num, dtype=torch.bool)
    for i, (p, g, inds, lab) in enumerate(images):
        priors[i, :len(p)], gts[i, :len(g)] = p, g
        gt_inds[i, :len(p)], labels[i, :len(p)] = inds, lab
        valid[i, :len(p)] = True
    assign = AssignResult(torch.tensor([len(img[1]) for img in images]),
                          gt_inds, torch.zeros(gt_inds.shape), labels)
    return BatchSamplingResult(priors, valid, torch.zeros_like(valid),
                               assign, gt_inds > 0, gt_inds == 0, gts)


def roi_targets(head, res, cfg):
    """``(labels, label_weights, bbox_targets, bbox_weights)`` of the
    sampled RoIs in RoI order, and the padded ``(B, M)`` targets."""
    padded = head.get_targets(res.priors, res.gt_bboxes, res.assign_result,
                              res.pos_mask, res.neg_mask, cfg)
    img, cand = res.roi_index()
    return tuple(padded[k][img, cand] for k in (
        'labels', 'label_weights', 'bbox_targets', 'bbox_weights')), padded


def two_images():
    img0 = sampling_result([[0., 0., 10., 10.]], [[1., 2., 11., 14.]], [2],
                           [[50., 50., 60., 60.], [70., 70., 80., 90.]])
    img1 = sampling_result([[0., 0., 20., 10.], [5., 5., 25., 25.]],
                           [[0., 0., 20., 10.], [7., 3., 27., 28.]], [0, 1],
                           [[30., 30., 40., 40.]])
    return batch(img0, img1)


def test_targets_follow_roi_order_positives_then_negatives_per_image():
    head = small_head()
    (labels, weights, targets, bbox_weights), _ = roi_targets(
        head, two_images(), dict(pos_weight=-1))
    assert labels.tolist() == [2, 3, 3, 0, 1, 3]
    assert weights.tolist() == [1.] * 6
    assert bbox_weights.sum(1).tolist() == [4., 0., 0., 4., 4., 0.]
    # encode((0,0,10,10) -> (1,2,11,14)) with stds (0.1, 0.1, 0.2, 0.2):
    # dx = (6-5)/10/0.1 = 1, dy = (8-5)/10/0.1 = 3, dw = 0, dh = ln(1.2)/0.2
    torch.testing.assert_close(
        targets[0], torch.tensor([1., 3., 0., math.log(1.2) / 0.2]))
    assert targets[3].abs().sum() == 0  # a GT proposal of itself
    res = two_images()
    padded = roi_targets(head, res, None)[1]['labels']
    per_image = [padded[i][res.priors_valid[i]] for i in range(2)]
    assert [t.tolist() for t in per_image] == [[2, 3, 3], [0, 1, 3]]
    (labels, weights, _, _), _ = roi_targets(head, two_images(),
                                             dict(pos_weight=2.0))
    assert weights.tolist() == [2., 1., 1., 2., 2., 1.]


def test_loss_picks_each_positive_s_own_class_block_and_divides_by_all_rois():
    head = small_head()
    results = two_images()
    (labels, weights, targets, bbox_weights), _ = roi_targets(
        head, results, None)
    num_rois = 6
    # every class block but the right one is far off: only the own class
    # may enter the loss
    bbox_pred = torch.full((num_rois, 12), 100.)
    own = targets + torch.tensor([0.5, -0.25, 0., 1.])
    rows = torch.arange(num_rois)
    for k in range(4):
        bbox_pred[rows, labels.clamp(max=2) * 4 + k] = own[:, k]
    cls_score = torch.randn(num_rois, 4)
    rois = results.rois()
    losses = head.loss(cls_score, bbox_pred, rois, labels, weights, targets,
                       bbox_weights)
    # 3 positives x (0.5 + 0.25 + 0 + 1) over all 6 sampled RoIs (not 3)
    eps = torch.finfo(torch.float32).eps
    assert losses['loss_bbox'].item() == pytest.approx(3 * 1.75 / (6 + eps),
                                                       rel=1e-6)
    expected_cls = F.cross_entropy(cls_score, labels, reduction='sum') / 6
    assert losses['loss_cls'].item() == pytest.approx(expected_cls.item(),
                                                      rel=1e-5)
    hits = (cls_score.argmax(1) == labels).float().mean() * 100
    assert losses['acc'].item() == pytest.approx(hits.item())


def test_class_agnostic_regression_uses_the_single_block():
    head = small_head(reg_class_agnostic=True)
    (labels, weights, targets, bbox_weights), _ = roi_targets(
        head, two_images(), None)
    bbox_pred = targets + 0.5
    losses = head.loss(torch.zeros(6, 4), bbox_pred, None, labels, weights,
                       targets, bbox_weights)
    eps = torch.finfo(torch.float32).eps
    assert losses['loss_bbox'].item() == pytest.approx(3 * 4 * 0.5 / (6 + eps))


def test_no_positive_gives_zero_bbox_loss_with_a_graph():
    head = small_head()
    bg = sampling_result([], [], [], [[0., 0., 5., 5.], [1., 1., 9., 9.]])
    (labels, weights, targets, bbox_weights), _ = roi_targets(
        head, batch(bg), None)
    assert labels.tolist() == [3, 3]
    cls_score = torch.zeros(2, 4)
    bbox_pred = torch.ones(2, 12, requires_grad=True)
    losses = head.loss(cls_score, bbox_pred, None, labels, weights, targets,
                       bbox_weights)
    assert losses['loss_bbox'].item() == 0
    assert losses['loss_bbox'].requires_grad
    # uniform logits: CE = ln 4 per RoI
    assert losses['loss_cls'].item() == pytest.approx(math.log(4))


def test_predict_decodes_clips_rescales_and_runs_per_class_nms():
    head = small_head()
    rois = (torch.tensor([[0., 10., 10., 50., 30.], [0., 12., 10., 52., 30.],
                          [0., 60., 40., 120., 100.]]),
            torch.zeros((0, 5)))
    # zero deltas: every class box is its RoI, clipped to the 80 x 100 image
    bbox_preds = (torch.zeros(3, 12), torch.zeros(0, 12))
    logits = torch.log(torch.tensor([[0.7, 0.1, 0.1, 0.1],
                                     [0.6, 0.3, 0.04, 0.06],
                                     [0.02, 0.03, 0.9, 0.05]]))
    cls_scores = (logits, torch.zeros(0, 4))
    metas = [dict(img_shape=(80, 100), scale_factor=(0.5, 0.25)),
             dict(img_shape=(80, 100), scale_factor=(1., 1.))]
    cfg = dict(score_thr=0.05, nms=dict(type='nms', iou_threshold=0.5),
               max_per_img=100)
    res, empty = head.predict_by_feat(rois, cls_scores, bbox_preds, metas,
                                      rcnn_test_cfg=cfg, rescale=True)
    assert len(empty) == 0
    # RoIs 0 and 1 overlap with IoU 760 / 840: within a class the lower
    # one is suppressed. class 0: 0.7 (RoI 0); class 1: 0.3 (RoI 1);
    # class 2: 0.9 (RoI 2) and 0.1 (RoI 0, no overlap with RoI 2); scores
    # <= 0.05 (0.02, 0.03, 0.04) never enter
    torch.testing.assert_close(res.scores,
                               torch.tensor([0.9, 0.7, 0.3, 0.1]))
    assert res.labels.tolist() == [2, 0, 1, 2]
    # RoI 2 is clipped to x <= 100, y <= 80, then scaled by (1/0.5, 1/0.25)
    torch.testing.assert_close(res.bboxes[0],
                               torch.tensor([120., 160., 200., 320.]))
    torch.testing.assert_close(res.bboxes[1],
                               torch.tensor([20., 40., 100., 120.]))
    raw = head.predict_by_feat(rois, cls_scores, bbox_preds, metas)[0]
    assert raw.bboxes.shape == (3, 12) and raw.scores.shape == (3, 4)


def test_unsupported_options_are_named():
    with pytest.raises(ValueError, match='use_sigmoid'):
        BBoxHead(loss_cls=dict(type='CrossEntropyLoss', use_sigmoid=True))
    with pytest.raises(ValueError, match='reg_predictor_cfg'):
        BBoxHead(reg_predictor_cfg=dict(type='NormedLinear'))
