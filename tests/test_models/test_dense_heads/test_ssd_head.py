"""SSDHead: layers per level, anchors through the head, hard-negative mining
and the SSD loss worked out by hand, prediction (docs/ssd.md)."""
import math

import pytest
import torch
from mmengine.config import Config
from mmengine.registry import DefaultScope
from mmengine.structures import InstanceData

from conftest import REPO_ROOT
from detkit.models.dense_heads.ssd_head import hard_negative_ce
from detkit.models.utils import levels_to_images
from detkit.registry import MODELS

EPS = torch.finfo(torch.float32).eps
TRAIN_CFG = dict(
    assigner=dict(
        type='MaxIoUAssigner',
        pos_iou_thr=0.5,
        neg_iou_thr=0.5,
        min_pos_iou=0.,
        ignore_iof_thr=-1,
        gt_max_assign_all=False),
    sampler=dict(type='PseudoSampler'),
    smoothl1_beta=1.,
    allowed_border=-1,
    pos_weight=-1,
    neg_pos_ratio=3)
TEST_CFG = dict(
    nms_pre=1000,
    nms=dict(type='nms', iou_threshold=0.45),
    min_bbox_size=0,
    score_thr=0.02,
    max_per_img=200)


def build(cfg):
    with DefaultScope.overwrite_default_scope('detkit'):
        return MODELS.build(cfg)


def tiny_head(**kwargs):
    """One level, stride 8, a 2x2 map of a 16x16 image, 2 classes.

    Per location 4 anchors: 8x8, 16x16 (sqrt(8 * 32)), and 8/sqrt(3) x
    8*sqrt(3) lying and standing. At (4, 4): [0, 0, 8, 8], [-4, -4, 12,
    12], [-2.93, 1.69, 10.93, 6.31], [1.69, -2.93, 6.31, 10.93]. Anchor
    n = (row * 2 + col) * 4 + a.
    """
    cfg = dict(
        type='SSDHead',
        num_classes=2,
        in_channels=(4, ),
        anchor_generator=dict(
            type='SSDAnchorGenerator',
            scale_major=False,
            strides=[8],
            ratios=[[3]],
            min_sizes=[8],
            max_sizes=[32]),
        bbox_coder=dict(
            type='DeltaXYWHBBoxCoder',
            target_means=[0.] * 4,
            target_stds=[0.1, 0.1, 0.2, 0.2]),
        train_cfg=TRAIN_CFG,
        test_cfg=TEST_CFG)
    cfg.update(kwargs)
    return build(cfg)


def to_level(per_anchor, height=2, width=2):
    """``(B, N, K)`` per-anchor values -> ``(B, A*K, H, W)`` head output
    (the inverse of levels_to_images for one level)."""
    batch, num, k = per_anchor.shape
    num_anchors = num // (height * width)
    return per_anchor.reshape(batch, height, width,
                              num_anchors * k).permute(0, 3, 1, 2)


def meta(h=16, w=16, scale=1.0):
    return dict(img_shape=(h, w), pad_shape=(h, w),
                scale_factor=(scale, scale))


def gt(boxes, labels):
    return InstanceData(
        bboxes=torch.tensor(boxes, dtype=torch.float32).reshape(-1, 4),
        labels=torch.tensor(labels, dtype=torch.long))


# --------------------------------------------------------------- layers
def test_layers_have_one_branch_per_level_with_its_anchor_count():
    head = tiny_head(in_channels=(4, ))
    assert head.num_base_priors == [4]
    assert head.cls_out_channels == 3  # background is the last channel
    assert tuple(head.cls_convs[0][0].weight.shape) == (4 * 3, 4, 3, 3)
    assert tuple(head.reg_convs[0][0].weight.shape) == (4 * 4, 4, 3, 3)
    cfg = Config.fromfile(f'{REPO_ROOT}/configs/_base_/models/ssd300.py')
    ssd = build(dict(cfg.model.bbox_head, num_classes=2,
                     in_channels=(8, ) * 6))
    assert ssd.num_base_priors == [4, 6, 6, 6, 4, 4]
    assert [c[0].out_channels for c in ssd.cls_convs] == [12, 18, 18, 18,
                                                          12, 12]
    assert [c[0].out_channels for c in ssd.reg_convs] == [16, 24, 24, 24,
                                                          16, 16]


def test_stacked_and_depthwise_layouts():
    head = tiny_head(in_channels=(4, ), stacked_convs=1, feat_channels=8,
                     norm_cfg=dict(type='BN'), act_cfg=dict(type='ReLU'))
    keys = sorted(k for k in head.state_dict() if k.startswith('cls_convs'))
    assert keys[0] == 'cls_convs.0.0.bn.bias'
    assert tuple(head.cls_convs[0][0].conv.weight.shape) == (8, 4, 3, 3)
    assert tuple(head.cls_convs[0][1].weight.shape) == (12, 8, 3, 3)

    lite = tiny_head(in_channels=(4, ), use_depthwise=True,
                     norm_cfg=dict(type='BN', eps=0.001, momentum=0.03),
                     act_cfg=dict(type='ReLU6'))
    dw, out = lite.cls_convs[0]
    assert dw.conv.groups == 4 and tuple(dw.conv.weight.shape) == (4, 1, 3,
                                                                   3)
    assert dw.conv.bias is None and dw.bn.eps == 0.001
    assert dw.bn.momentum == 0.03
    assert isinstance(dw.activate, torch.nn.ReLU6)
    assert out.kernel_size == (1, 1) and out.padding == (0, 0)
    assert tuple(out.weight.shape) == (12, 4, 1, 1)


def test_xavier_uniform_init_with_zero_bias():
    head = tiny_head(in_channels=(64, ))
    head.init_weights()
    conv = head.cls_convs[0][0]
    fan_in, fan_out = 64 * 9, 12 * 9
    bound = math.sqrt(6 / (fan_in + fan_out))
    assert conv.bias.abs().max() == 0
    assert conv.weight.abs().max() <= bound
    # uniform on [-b, b]: variance b^2 / 3
    assert conv.weight.var().item() == pytest.approx(bound**2 / 3, rel=0.1)


def test_in_channels_must_match_levels():
    with pytest.raises(ValueError, match='in_channels'):
        tiny_head(in_channels=(4, 4))


@pytest.mark.parametrize('config, size, sizes, total', [
    ('ssd/ssd300_coco.py', 300, [38, 19, 10, 5, 3, 1], 8732),
    ('ssd/ssd512_coco.py', 512, [64, 32, 16, 8, 4, 2, 1], 24564),
    ('ssd/ssdlite_mobilenetv2-scratch_8xb24-600e_coco.py', 320,
     [20, 10, 5, 3, 2, 1], 3234),
])
def test_anchor_counts_through_the_head(config, size, sizes, total):
    cfg = Config.fromfile(f'{REPO_ROOT}/configs/{config}')
    head_cfg = cfg.model.bbox_head
    # 2 input channels and no BN (1x1 maps): only the anchor layout counts
    head = build(dict(head_cfg, num_classes=2, in_channels=(2, ) * len(sizes),
                      norm_cfg=None, train_cfg=cfg.model.train_cfg))
    feats = tuple(torch.zeros(1, 2, s, s) for s in sizes)
    cls_scores, bbox_preds = head(feats)
    assert levels_to_images(cls_scores, 3).shape == (1, total, 3)
    assert levels_to_images(bbox_preds, 4).shape == (1, total, 4)
    anchors, valid = head.get_anchors([f.shape[-2:] for f in feats],
                                      [meta(size, size)], 'cpu')
    assert anchors.shape == (total, 4) and bool(valid.all())


# ------------------------------------------------- hard-negative mining
def test_hard_negative_ce_by_hand():
    ce = torch.tensor([
        # 1 positive (index 0), 6 negatives: k = 3 -> 0.9 + 0.8 + 0.7
        [5.0, 0.1, 0.9, 0.2, 0.8, 0.7, 0.3],
        # 2 positives, 3 negatives: k = min(6, 3) = 3 -> all of them
        [1.0, 2.0, 0.5, 0.25, 0.125, 0.0, 0.0],
        # no positive: k = 0 -> nothing, however large the negatives
        [9.0, 9.0, 9.0, 9.0, 9.0, 9.0, 9.0],
    ])
    pos = torch.zeros(3, 7, dtype=torch.bool)
    pos[0, 0] = True
    pos[1, :2] = True
    # Image 1's last two anchors count as negatives (like mmdetection's
    # ignored anchors) but have ce 0, so the sum is unchanged.
    out = hard_negative_ce(ce, pos, 3)
    torch.testing.assert_close(out, torch.tensor([5.0 + 2.4, 3.875, 0.0]))
    # neg_pos_ratio 1: image 0 keeps only 0.9, image 1 the two largest.
    torch.testing.assert_close(
        hard_negative_ce(ce, pos, 1), torch.tensor([5.9, 3.75, 0.0]))


def test_hard_negative_ce_picks_exactly_3x_negatives():
    torch.manual_seed(0)
    ce = torch.rand(4, 50)
    pos = torch.zeros(4, 50, dtype=torch.bool)
    pos[0, :2] = True    # 2 positives -> 6 negatives
    pos[1, :20] = True   # 20 positives, 30 negatives -> all 30
    pos[2, :5] = True    # 5 positives -> 15 negatives
    # image 3: none -> 0
    ce = ce.requires_grad_()
    out = hard_negative_ce(ce, pos, 3)
    out.sum().backward()
    picked = (ce.grad > 0) & ~pos  # a negative gets gradient iff kept
    assert picked.sum(1).tolist() == [6, 30, 15, 0]
    for i in range(3):
        neg = ce[i][~pos[i]].detach()
        k = int(picked[i].sum())
        expected = ce[i][pos[i]].sum() + neg.topk(k).values.sum()
        torch.testing.assert_close(out[i], expected)
        # the kept negatives are the largest ones
        assert ce[i][picked[i]].min() >= neg.topk(k).values.min()
    assert out[3] == 0


# ------------------------------------------------------------- the loss
def crafted_outputs(batch):
    """Logits ``[a_n, 0, 0]`` with ``a_n = 0.1 * n`` on every anchor
    (negative CE ``log(e^a + 2)``) and deltas of 0.5 on anchor 0's x and
    2.0 on its w; large deltas elsewhere (they must not count)."""
    a = 0.1 * torch.arange(16, dtype=torch.float32)
    logits = torch.zeros(batch, 16, 3)
    logits[..., 0] = a
    deltas = torch.full((batch, 16, 4), 7.0)
    deltas[:, 0] = torch.tensor([0.5, 0.0, 0.0, 2.0])
    return [to_level(logits)], [to_level(deltas)], a


def test_loss_by_hand_with_an_image_without_gt():
    head = tiny_head()
    cls_scores, bbox_preds, a = crafted_outputs(2)
    a = a.tolist()
    # GT = anchor 0 (IoU 1). Other IoUs: 16x16 anchor 0.25, lying and
    # standing anchors 36.95 / 91.05 = 0.406, the rest less: 1 positive.
    losses = head.loss_by_feat(cls_scores, bbox_preds,
                               [gt([[0, 0, 8, 8]], [0]), gt([], [])],
                               [meta(), meta()])
    pos_ce = math.log(math.exp(a[0]) + 2) - a[0]
    # k = min(3 * 1, 15) = 3: the negatives with the largest a (n = 13..15)
    neg_ce = sum(math.log(math.exp(a[n]) + 2) for n in (13, 14, 15))
    # N = max(1, 1) + max(0, 1) = 2; the image without GT adds 0 to the sum
    assert losses['loss_cls'].item() == pytest.approx(
        (pos_ce + neg_ce) / 2, rel=1e-6)
    # target deltas are 0 (GT = anchor): smooth L1 0.125 + 0 + 0 + 1.5
    assert losses['loss_bbox'].item() == pytest.approx(
        1.625 / (2 + EPS), rel=1e-6)


def test_normalised_by_sum_of_positives_per_image():
    head = tiny_head()
    cls_scores, bbox_preds, a = crafted_outputs(2)
    single = head.loss_by_feat([c[:1] for c in cls_scores],
                               [b[:1] for b in bbox_preds],
                               [gt([[0, 0, 8, 8]], [0])], [meta()])
    # The same image twice: sums double and N = 1 + 1 doubles too.
    double = head.loss_by_feat(cls_scores, bbox_preds,
                               [gt([[0, 0, 8, 8]], [0])] * 2,
                               [meta(), meta()])
    for key in ('loss_cls', 'loss_bbox'):
        assert double[key].item() == pytest.approx(single[key].item(),
                                                   rel=1e-6)
    # Two GTs in one image: anchors 0 and 12 ([8, 8, 16, 16]) positive,
    # N = 2, k = 6 negatives: n = 9, 10, 11, 13, 14, 15.
    two = head.loss_by_feat([c[:1] for c in cls_scores],
                            [b[:1] for b in bbox_preds],
                            [gt([[0, 0, 8, 8], [8, 8, 16, 16]], [0, 1])],
                            [meta()])
    ce = [math.log(math.exp(v) + 2) for v in a.tolist()]
    expected = ((ce[0] - a[0].item()) + ce[12] +
                sum(ce[n] for n in (9, 10, 11, 13, 14, 15))) / 2
    assert two['loss_cls'].item() == pytest.approx(expected, rel=1e-6)
    # anchor 12's deltas are 7 against targets 0: 4 * 6.5, plus 1.625
    assert two['loss_bbox'].item() == pytest.approx(
        (1.625 + 26.0) / (2 + EPS), rel=1e-6)


def test_no_gt_in_the_batch_gives_zero_losses_with_a_graph():
    head = tiny_head()
    feats = (torch.randn(2, 4, 2, 2), )
    cls_scores, bbox_preds = head(feats)
    losses = head.loss_by_feat(cls_scores, bbox_preds,
                               [gt([], []), gt([], [])], [meta(), meta()])
    # No positives -> k = 0 negatives per image: both losses are exactly 0.
    assert losses['loss_cls'].item() == 0.0
    assert losses['loss_bbox'].item() == 0.0
    (losses['loss_cls'] + losses['loss_bbox']).backward()
    grad = head.cls_convs[0][0].weight.grad
    assert grad is not None and grad.abs().sum() == 0


def test_training_the_head_lowers_its_loss():
    torch.manual_seed(0)
    head = tiny_head()
    head.init_weights()
    feats = (torch.randn(1, 4, 2, 2), )
    gts = [gt([[0, 0, 8, 8], [8, 8, 16, 16]], [0, 1])]
    optim = torch.optim.SGD(head.parameters(), lr=0.1)
    history = []
    for _ in range(8):
        losses = head.loss_by_feat(*head(feats), gts, [meta()])
        total = losses['loss_cls'] + losses['loss_bbox']
        assert torch.isfinite(total)
        history.append(total.item())
        optim.zero_grad()
        total.backward()
        optim.step()
    assert history[-1] < 0.5 * history[0]


# ------------------------------------------------------------- predict
def crafted_predictions():
    """Background logit 0, class logits -10 except:
    anchor 0 [0, 0, 8, 8] class 0: 2; anchor 2 (lying, clipped to [0,
    1.69, 10.93, 6.31], IoU 0.477 with anchor 0) class 0: 1; anchor 1
    ([0, 0, 12, 12] clipped, IoU 64/144 = 0.444 with anchor 0) class 0:
    1.5, class 1: 0.5; anchor 12 [8, 8, 16, 16] class 1: -3.85 (score
    0.0208); anchor 4 [8, 0, 16, 8] class 1: -3.9 (score 0.0198)."""
    logits = torch.full((1, 16, 3), -10.0)
    logits[..., 2] = 0
    logits[0, 0, 0] = 2.0
    logits[0, 2, 0] = 1.0
    logits[0, 1, :2] = torch.tensor([1.5, 0.5])
    logits[0, 12, 1] = -3.85
    logits[0, 4, 1] = -3.9
    return [to_level(logits)], [to_level(torch.zeros(1, 16, 4))]


def softmax_score(logits, c):
    exps = [math.exp(v) for v in logits]
    return exps[c] / sum(exps)


def test_predict_softmax_threshold_nms_and_rescale():
    head = tiny_head()
    cls_scores, bbox_preds = crafted_predictions()
    results = head.predict_by_feat(
        cls_scores, bbox_preds, batch_img_metas=[meta(scale=0.5)],
        rescale=True)[0]
    expected_scores = [
        softmax_score([2, -10, 0], 0),      # anchor 0
        softmax_score([1.5, 0.5, 0], 0),    # anchor 1, class 0
        softmax_score([1.5, 0.5, 0], 1),    # anchor 1, class 1
        softmax_score([-10, -3.85, 0], 1),  # anchor 12 (just above 0.02)
    ]
    assert expected_scores[-1] > 0.02 > softmax_score([-10, -3.9, 0], 1)
    torch.testing.assert_close(results.scores,
                               torch.tensor(expected_scores))
    assert results.labels.tolist() == [0, 0, 1, 1]
    # boxes clipped to the 16x16 input, then x2 to the original image
    torch.testing.assert_close(
        results.bboxes,
        torch.tensor([[0., 0., 16., 16.], [0., 0., 24., 24.],
                      [0., 0., 24., 24.], [16., 16., 32., 32.]]),
        atol=1e-4, rtol=0)


def test_predict_nms_pre_and_max_per_img():
    head = tiny_head()
    cls_scores, bbox_preds = crafted_predictions()
    # nms_pre 2 keeps anchor 0 (0.881) and anchor 2 (0.731) of the level;
    # NMS then removes anchor 2 (IoU 0.477 > 0.45).
    cfg = dict(TEST_CFG, nms_pre=2)
    out = head.predict_by_feat(cls_scores, bbox_preds,
                               batch_img_metas=[meta()], cfg=cfg)[0]
    assert len(out) == 1 and out.labels.tolist() == [0]
    cfg = dict(TEST_CFG, max_per_img=3)
    out = head.predict_by_feat(cls_scores, bbox_preds,
                               batch_img_metas=[meta()], cfg=cfg)[0]
    assert len(out) == 3 and out.scores.min() > 0.2
    # nothing above the threshold: an empty result, not an error
    cfg = dict(TEST_CFG, score_thr=0.9)
    out = head.predict_by_feat(cls_scores, bbox_preds,
                               batch_img_metas=[meta()], cfg=cfg)[0]
    assert len(out) == 0 and out.bboxes.shape == (0, 4)
