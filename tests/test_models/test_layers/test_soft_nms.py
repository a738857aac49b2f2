"""soft_nms (linear, gaussian, naive) and its use through batched_nms /
multiclass_nms: hand-worked cases and a plain sequential pass."""
import math

import pytest
import torch

from detkit.models.layers import batched_nms, multiclass_nms, soft_nms

# Box 1 overlaps box 0 by IoU 90 / 110 = 9/11; box 2 is apart; box 3 equals
# box 0 (IoU 1).
BOXES = torch.tensor([[0., 0., 10., 10.], [1., 0., 11., 10.],
                      [20., 20., 30., 30.], [0., 0., 10., 10.]])
SCORES = torch.tensor([0.9, 0.8, 0.7, 0.3])
IOU01 = 9 / 11


def test_linear_by_hand():
    dets, keep = soft_nms(BOXES, SCORES, iou_threshold=0.5)
    # box 0 taken: box 1 *= 1 - 9/11, box 3 *= 1 - 1 = 0 < min_score: gone;
    # then box 2 (0.7) and box 1 (0.8 * 2/11 = 0.1455)
    assert keep.tolist() == [0, 2, 1]
    assert dets[:, 4].tolist() == pytest.approx(
        [0.9, 0.7, 0.8 * (1 - IOU01)], rel=1e-6)
    assert torch.equal(dets[:, :4], BOXES[keep])


def test_linear_threshold_is_strict():
    # IoU exactly 0.5 is not above the threshold: no decay
    boxes = torch.tensor([[0., 0., 10., 10.], [0., 0., 10., 5.]])
    dets, keep = soft_nms(boxes, torch.tensor([0.9, 0.6]), iou_threshold=0.5)
    assert keep.tolist() == [0, 1]
    assert dets[:, 4].tolist() == pytest.approx([0.9, 0.6])
    dets, _ = soft_nms(boxes, torch.tensor([0.9, 0.6]), iou_threshold=0.49)
    assert dets[1, 4].item() == pytest.approx(0.6 * 0.5)


def test_gaussian_by_hand_decays_every_overlap():
    dets, keep = soft_nms(BOXES, SCORES, iou_threshold=0.99, sigma=0.5,
                          method='gaussian')
    g01 = math.exp(-IOU01**2 / 0.5)  # 0.26215; the threshold plays no part
    # box 0: box 1 -> 0.8 g01 = 0.2097, box 3 -> 0.3 e^-2 = 0.0406;
    # box 2 (0.7): no overlap; box 1: box 3 -> 0.0406 * g01 = 0.01064
    assert keep.tolist() == [0, 2, 1, 3]
    assert dets[:, 4].tolist() == pytest.approx(
        [0.9, 0.7, 0.8 * g01, 0.3 * math.exp(-2) * g01], rel=1e-5)
    # min_score drops a box as soon as its score falls below it
    dets, keep = soft_nms(BOXES, SCORES, sigma=0.5, min_score=0.05,
                          method='gaussian')
    assert keep.tolist() == [0, 2, 1]


def test_a_decayed_box_falls_behind_a_lower_one():
    # B (0.85) loses to C (0.5) after being decayed by A: the output is
    # sorted by the decayed scores, not the input ones.
    boxes = torch.tensor([[0., 0., 10., 10.], [0., 0., 10., 9.],
                          [50., 50., 60., 60.]])
    dets, keep = soft_nms(boxes, torch.tensor([0.9, 0.85, 0.5]),
                          iou_threshold=0.3)
    assert keep.tolist() == [0, 2, 1]
    assert dets[:, 4].tolist() == pytest.approx([0.9, 0.5, 0.85 * 0.1],
                                                rel=1e-5)


def test_naive_is_hard_nms():
    dets, keep = soft_nms(BOXES, SCORES, iou_threshold=0.5, method='naive')
    assert keep.tolist() == [0, 2]
    assert dets[:, 4].tolist() == pytest.approx([0.9, 0.7])


def _sequential_soft_nms(boxes, scores, thr, sigma, min_score, method):
    """The textbook pass over all boxes at once, in Python floats."""
    boxes = boxes.tolist()
    scores = scores.tolist()
    alive = list(range(len(boxes)))
    out = []
    while alive:
        i = max(alive, key=lambda k: (scores[k], -k))
        alive.remove(i)
        out.append((i, scores[i]))
        x1, y1, x2, y2 = boxes[i]
        for k in list(alive):
            a1, b1, a2, b2 = boxes[k]
            iw = max(0., min(x2, a2) - max(x1, a1))
            ih = max(0., min(y2, b2) - max(y1, b1))
            inter = iw * ih
            iou = inter / ((x2 - x1) * (y2 - y1) + (a2 - a1) * (b2 - b1) -
                           inter)
            if method == 'gaussian':
                scores[k] *= math.exp(-iou * iou / sigma)
            elif iou > thr:
                scores[k] *= 1 - iou
            if scores[k] < min_score:
                alive.remove(k)
    return out


@pytest.mark.parametrize('method', ['linear', 'gaussian'])
def test_batched_groups_side_by_side_equal_one_sequential_pass(method):
    """batched_nms shifts each class apart and runs the classes in step;
    that equals one sequential pass over all shifted boxes."""
    gen = torch.Generator().manual_seed(3)
    xy = torch.rand(60, 2, generator=gen) * 40
    wh = torch.rand(60, 2, generator=gen) * 30 + 5
    boxes = torch.cat([xy, xy + wh], 1)
    scores = torch.rand(60, generator=gen)
    labels = torch.randint(0, 4, (60, ), generator=gen)
    cfg = dict(type='soft_nms', iou_threshold=0.4, sigma=0.5,
               min_score=0.05, method=method)
    dets, keep = batched_nms(boxes, scores, labels, cfg)
    shift = labels.float()[:, None] * (boxes.max() + 1)
    expected = _sequential_soft_nms(boxes + shift, scores, 0.4, 0.5, 0.05,
                                    method)
    assert keep.tolist() == [i for i, _ in expected]
    assert dets[:, 4].tolist() == pytest.approx([s for _, s in expected],
                                                rel=1e-5)
    assert torch.equal(dets[:, :4], boxes[keep])  # unshifted boxes
    assert 10 < len(keep) < 60  # some decayed below min_score, not all
    # class_agnostic: one group, the unshifted boxes
    dets, keep = batched_nms(boxes, scores, labels,
                             dict(cfg, class_agnostic=True))
    expected = _sequential_soft_nms(boxes, scores, 0.4, 0.5, 0.05, method)
    assert keep.tolist() == [i for i, _ in expected]


def test_multiclass_nms_with_the_soft_nms_config():
    # faster-rcnn_r50_fpn_soft-nms_1x_coco.py: score_thr 0.05,
    # nms=dict(type='soft_nms', iou_threshold=0.5), max_per_img 100
    boxes = BOXES[:3]
    # columns: class 0, class 1, background
    multi_scores = torch.tensor([[0.9, 0.02, 0.08], [0.8, 0.6, 0.0],
                                 [0.04, 0.7, 0.26]])
    dets, labels = multiclass_nms(
        boxes, multi_scores, 0.05, dict(type='soft_nms', iou_threshold=0.5),
        max_num=100)
    # class 0: boxes 0 (0.9) and 1 (0.8 -> 0.8 * 2/11); box 2 is under
    # score_thr. class 1: boxes 2 (0.7) and 1 (0.6, no overlap with 2).
    assert labels.tolist() == [0, 1, 1, 0]
    assert dets[:, 4].tolist() == pytest.approx(
        [0.9, 0.7, 0.6, 0.8 * (1 - IOU01)], rel=1e-6)
    assert torch.equal(dets[:, :4], boxes[[0, 2, 1, 1]])
    dets, labels = multiclass_nms(
        boxes, multi_scores, 0.05, dict(type='soft_nms', iou_threshold=0.5),
        max_num=2)
    assert labels.tolist() == [0, 1]


def test_empty_input_and_bad_configs():
    dets, keep = soft_nms(torch.zeros(0, 4), torch.zeros(0))
    assert dets.shape == (0, 5) and keep.numel() == 0
    dets, keep = batched_nms(torch.zeros(0, 4), torch.zeros(0),
                             torch.zeros(0, dtype=torch.long),
                             dict(type='soft_nms'))
    assert dets.shape == (0, 5)
    with pytest.raises(ValueError, match='method must be one of'):
        soft_nms(BOXES, SCORES, method='cubic')
    with pytest.raises(ValueError, match=r"unknown keys: \['max_num'\]"):
        batched_nms(BOXES, SCORES, torch.zeros(4, dtype=torch.long),
                    dict(type='soft_nms', iou_threshold=0.5, max_num=10))
    with pytest.raises(ValueError, match="type 'softnms' is not supported"):
        batched_nms(BOXES, SCORES, torch.zeros(4, dtype=torch.long),
                    dict(type='softnms'))
    with pytest.raises(ValueError, match='offset=1'):
        soft_nms(BOXES, SCORES, offset=1)
