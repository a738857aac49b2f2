"""MaxIoUAssigner: mmdetection reference, hand-made decisions
(docs/assignment.md), batch equivalence with a per-image loop written
straight from mmdetection's algorithm."""
import time

import pytest
import torch
from conftest import load_reference
from mmengine.structures import InstanceData

from detkit.models.task_modules.assigners import (AssignResult,
                                                  BboxOverlaps2D,
                                                  MaxIoUAssigner)
from detkit.registry import TASK_UTILS
from detkit.structures import bbox_overlaps


def assign_one(assigner, priors, gts, labels):
    return assigner.assign(
        InstanceData(priors=priors), InstanceData(bboxes=gts, labels=labels))


def loop_reference(priors, gts, labels, pos, neg, min_pos, assign_all,
                   low_quality=True):
    """Single image, step by step as docs/assignment.md states it."""
    num = len(priors)
    gt_inds = torch.full((num, ), -1, dtype=torch.long)
    if len(gts) == 0:
        return gt_inds.zero_(), torch.zeros(num), torch.full((num, ), -1)
    overlaps = bbox_overlaps(gts, priors)
    max_overlaps, argmax = overlaps.max(0)
    gt_max, gt_argmax = overlaps.max(1)
    gt_inds[(max_overlaps >= 0) & (max_overlaps < neg)] = 0
    positive = max_overlaps >= pos
    gt_inds[positive] = argmax[positive] + 1
    if low_quality:
        for i in range(len(gts)):
            if gt_max[i] >= min_pos:
                if assign_all:
                    gt_inds[overlaps[i] == gt_max[i]] = i + 1
                else:
                    gt_inds[gt_argmax[i]] = i + 1
    out_labels = torch.full((num, ), -1, dtype=torch.long)
    out_labels[gt_inds > 0] = labels[gt_inds[gt_inds > 0] - 1]
    return gt_inds, max_overlaps, out_labels


def test_retinanet_matches_mmdet_reference():
    ref = load_reference('max_iou_assigner_retinanet.pt')
    assigner = TASK_UTILS.build(eval(ref['component']))
    inputs, out = ref['inputs'], ref['outputs']
    result = assign_one(assigner, inputs['priors'], inputs['gt_bboxes'],
                        inputs['gt_labels'])
    assert result.num_gts == out['num_gts'] == 5
    assert torch.equal(result.gt_inds, out['gt_inds'])
    assert torch.equal(result.labels, out['labels'])
    torch.testing.assert_close(result.max_overlaps, out['max_overlaps'],
                               rtol=1e-6, atol=1e-7)
    assert int((result.gt_inds > 0).sum()) == out['num_pos'] == 130
    assert int((result.gt_inds == 0).sum()) == out['num_neg'] == 182027
    assert int((result.gt_inds == -1).sum()) == out['num_ignore'] == 246


GT = torch.tensor([[0., 0., 10., 10.]])
LABEL = torch.tensor([7])


def test_thresholds_and_ignore_band():
    priors = torch.tensor([
        [0., 0., 10., 10.],   # IoU 1      -> positive
        [0., 0., 10., 5.],    # IoU 0.5    -> positive (>= pos_iou_thr)
        [0., 0., 10., 4.5],   # IoU 0.45   -> ignored (between 0.4 and 0.5)
        [0., 0., 10., 4.],    # IoU 0.4    -> ignored (neg needs < 0.4)
        [0., 0., 10., 3.],    # IoU 0.3    -> negative
        [20., 20., 30., 30.],  # IoU 0      -> negative
    ])
    assigner = MaxIoUAssigner(0.5, 0.4, match_low_quality=False)
    result = assign_one(assigner, priors, GT, LABEL)
    assert result.gt_inds.tolist() == [1, 1, -1, -1, 0, 0]
    assert result.labels.tolist() == [7, 7, -1, -1, -1, -1]
    torch.testing.assert_close(result.max_overlaps,
                               torch.tensor([1., .5, .45, .4, .3, 0.]))


def test_negative_range_tuple():
    priors = torch.tensor([[0., 0., 10., 3.], [20., 20., 30., 30.]])
    assigner = MaxIoUAssigner(0.5, (0.1, 0.4), match_low_quality=False)
    # IoU 0.3 lies in [0.1, 0.4); IoU 0 does not and stays ignored.
    assert assign_one(assigner, priors, GT, LABEL).gt_inds.tolist() == [0, -1]


def test_low_quality_respects_min_pos_iou():
    priors = torch.tensor([[0., 0., 10., 3.], [0., 0., 10., 2.]])  # .3, .2
    on = MaxIoUAssigner(0.5, 0.1, min_pos_iou=0.25)
    assert assign_one(on, priors, GT, LABEL).gt_inds.tolist() == [1, -1]
    off = MaxIoUAssigner(0.5, 0.1, min_pos_iou=0.35)
    assert assign_one(off, priors, GT, LABEL).gt_inds.tolist() == [-1, -1]


def test_low_quality_ties_all_or_first():
    # Two priors tie at the GT's best IoU 0.3.
    priors = torch.tensor([[0., 0., 10., 3.], [0., 7., 10., 10.],
                           [0., 0., 10., 1.]])
    all_ = MaxIoUAssigner(0.5, 0.2, gt_max_assign_all=True)
    first = MaxIoUAssigner(0.5, 0.2, gt_max_assign_all=False)
    assert assign_one(all_, priors, GT, LABEL).gt_inds.tolist() == [1, 1, 0]
    # IoU 0.3 is above neg_iou_thr 0.2: the untaken tie stays ignored.
    assert assign_one(first, priors, GT, LABEL).gt_inds.tolist() == [1, -1, 0]


@pytest.mark.parametrize('assign_all', [True, False])
def test_later_gt_wins_low_quality(assign_all):
    prior = torch.tensor([[0., 0., 10., 10.], [50., 50., 60., 60.]])
    gts = torch.tensor([[0., 0., 10., 4.],    # IoU 0.4 with prior 0
                        [0., 0., 10., 3.]])   # IoU 0.3 with prior 0
    assigner = MaxIoUAssigner(0.5, 0.2, gt_max_assign_all=assign_all)
    result = assign_one(assigner, prior, gts, torch.tensor([1, 2]))
    # Both GTs claim prior 0; the loop's later GT (index 1) overwrites.
    assert result.gt_inds.tolist() == [2, 0]
    assert result.labels.tolist() == [2, -1]
    # max_overlaps is the best IoU, before the low-quality override.
    assert result.max_overlaps[0].item() == pytest.approx(0.4)


def test_low_quality_overrides_a_positive_of_another_gt():
    priors = torch.tensor([[0., 0., 10., 10.], [50., 50., 60., 60.]])
    gts = torch.tensor([[0., 0., 10., 9.],     # IoU 0.9: positive for GT 1
                        [0., 0., 10., 2.]])    # best IoU 0.2, same prior
    result = assign_one(MaxIoUAssigner(0.5, 0.1), priors, gts,
                        torch.tensor([0, 1]))
    assert result.gt_inds.tolist() == [2, 0]


def test_low_quality_zero_overlap_gt_takes_all_zero_priors():
    # min_pos_iou 0 (RetinaNet): a GT overlapping nothing has gt_max 0, so
    # every prior with IoU 0 to it is assigned to it (an edge case of
    # low-quality matching, docs/assignment.md).
    priors = torch.tensor([[0., 0., 10., 10.], [100., 100., 110., 110.]])
    gts = torch.tensor([[0., 0., 10., 10.], [500., 500., 510., 510.]])
    result = assign_one(MaxIoUAssigner(0.5, 0.4, min_pos_iou=0), priors, gts,
                        torch.tensor([3, 4]))
    assert result.gt_inds.tolist() == [2, 2]


def test_equal_overlaps_resolve_to_first_gt():
    prior = torch.tensor([[0., 0., 10., 10.]])
    gts = torch.tensor([[0., 0., 10., 20.], [0., -10., 10., 10.]])  # .5, .5
    result = assign_one(MaxIoUAssigner(0.5, 0.4, match_low_quality=False),
                        prior, gts, torch.tensor([5, 6]))
    assert result.gt_inds.tolist() == [1]
    assert result.labels.tolist() == [5]


def test_no_gt_and_no_priors():
    assigner = MaxIoUAssigner(0.5, 0.4)
    priors = torch.tensor([[0., 0., 10., 10.], [5., 5., 8., 8.]])
    result = assign_one(assigner, priors, torch.zeros(0, 4),
                        torch.zeros(0, dtype=torch.long))
    assert result.num_gts == 0
    assert result.gt_inds.tolist() == [0, 0]
    assert result.max_overlaps.tolist() == [0., 0.]
    assert result.labels.tolist() == [-1, -1]
    empty = assign_one(assigner, torch.zeros(0, 4), GT, LABEL)
    assert empty.gt_inds.shape == empty.labels.shape == (0, )


@pytest.mark.parametrize('wrt_candidates', [True, False])
def test_ignore_boxes(wrt_candidates):
    priors = torch.tensor([[0., 0., 10., 10.],     # IoU 1 with the GT
                           [100., 100., 104., 104.],  # inside ignore box
                           [300., 300., 310., 310.]])
    ignore = torch.tensor([[90., 90., 110., 110.]])
    assigner = MaxIoUAssigner(
        0.5, 0.4, ignore_iof_thr=0.5, ignore_wrt_candidates=wrt_candidates)
    result = assigner.assign(
        InstanceData(priors=priors), InstanceData(bboxes=GT, labels=LABEL),
        InstanceData(bboxes=ignore))
    if wrt_candidates:
        # IoF over the prior's area is 1 -> ignored, overlap -1.
        assert result.gt_inds.tolist() == [1, -1, 0]
        assert result.max_overlaps[1].item() == -1
    else:
        # IoF over the ignore box's area is 16 / 400 -> not ignored.
        assert result.gt_inds.tolist() == [1, 0, 0]


def _random_boxes(n, size=200., generator=None):
    xy = torch.rand(n, 2, generator=generator) * size
    wh = torch.rand(n, 2, generator=generator) * size / 3 + 1
    return torch.cat([xy, xy + wh], 1)


@pytest.mark.parametrize('assign_all', [True, False])
def test_batch_equals_per_image_reference(assign_all):
    g = torch.Generator().manual_seed(3)
    # A coarse grid of priors guarantees exact IoU ties between priors.
    priors = torch.cat([_random_boxes(300, generator=g),
                        torch.tensor([[0., 0., 20., 20.]]).repeat(3, 1),
                        _random_boxes(50, generator=g).round()])
    counts = [4, 0, 7, 1]
    gts = [_random_boxes(c, generator=g).round() for c in counts]
    labels = [torch.randint(0, 80, (c, ), generator=g) for c in counts]
    gts[2][3] = gts[2][1]  # duplicate GT: ties between ground truths
    max_g = max(counts)
    gt_pad = torch.zeros(4, max_g, 4)
    label_pad = torch.zeros(4, max_g, dtype=torch.long)
    valid = torch.zeros(4, max_g, dtype=torch.bool)
    for i, c in enumerate(counts):
        gt_pad[i, :c], label_pad[i, :c], valid[i, :c] = gts[i], labels[i], 1
    assigner = MaxIoUAssigner(0.5, 0.4, min_pos_iou=0.1,
                              gt_max_assign_all=assign_all)
    result = assigner.assign_batch(priors, gt_pad, label_pad, valid)
    assert result.is_batched and result.num_gts.tolist() == counts
    for i in range(4):
        gt_inds, max_ov, lab = loop_reference(priors, gts[i], labels[i], 0.5,
                                              0.4, 0.1, assign_all)
        assert torch.equal(result.gt_inds[i], gt_inds)
        assert torch.equal(result.labels[i], lab)
        assert torch.equal(result.max_overlaps[i], max_ov)
        single = assign_one(assigner, priors, gts[i], labels[i])
        assert torch.equal(single.gt_inds, gt_inds)
    # Per-image priors (B, N, 4) give the same result.
    again = assigner.assign_batch(priors.expand(4, -1, -1), gt_pad,
                                  label_pad, valid)
    assert torch.equal(again.gt_inds, result.gt_inds)


def test_padding_position_is_irrelevant():
    g = torch.Generator().manual_seed(5)
    priors = _random_boxes(200, generator=g)
    gts = _random_boxes(3, generator=g)
    labels = torch.tensor([4, 5, 6])
    assigner = MaxIoUAssigner(0.5, 0.4)
    ref = assign_one(assigner, priors, gts, labels)
    # Padding in the middle, with a box that would win everything.
    padded = torch.stack([gts[0], torch.tensor([0., 0., 300., 300.]),
                          gts[1], gts[2]])[None]
    valid = torch.tensor([[True, False, True, True]])
    result = assigner.assign_batch(priors, padded,
                                   torch.tensor([[4, 9, 5, 6]]), valid)
    remap = torch.tensor([0, 1, 3, 4])  # old 1-based index -> new
    expected = torch.where(ref.gt_inds > 0, remap[ref.gt_inds.clamp(min=0)],
                           ref.gt_inds)
    assert torch.equal(result.gt_inds[0], expected)
    assert torch.equal(result.labels[0], ref.labels)


def test_invalid_priors_take_no_part():
    priors = torch.tensor([[0., 0., 10., 3.],    # IoU .3: GT's best
                           [0., 0., 10., 2.],    # IoU .2: next best
                           [50., 50., 60., 60.]])
    gts = GT[None]
    labels = LABEL[None]
    assigner = MaxIoUAssigner(0.5, 0.1)
    both = assigner.assign_batch(priors, gts, labels)
    assert both.gt_inds[0].tolist() == [1, -1, 0]
    valid = torch.tensor([[False, True, True]])
    result = assigner.assign_batch(priors, gts, labels, priors_valid=valid)
    # Without prior 0, prior 1 is the GT's best and low-quality matched.
    assert result.gt_inds[0].tolist() == [-1, 1, 0]
    assert result.labels[0].tolist() == [-1, 7, -1]
    assert result.max_overlaps[0, 0].item() == -1
    # Same as removing the prior from the list.
    removed = assign_one(assigner, priors[1:], GT, LABEL)
    assert result.gt_inds[0, 1:].tolist() == removed.gt_inds.tolist()
    # An image without valid GT: valid priors negative, invalid ignored.
    empty = assigner.assign_batch(
        priors, gts, labels, gt_valid=torch.tensor([[False]]),
        priors_valid=valid)
    assert empty.gt_inds[0].tolist() == [-1, 0, 0]
    assert empty.num_gts.tolist() == [0]


def test_batch_with_zero_padded_gt_count():
    assigner = MaxIoUAssigner(0.5, 0.4)
    priors = _random_boxes(10)
    result = assigner.assign_batch(priors, torch.zeros(2, 0, 4),
                                   torch.zeros(2, 0, dtype=torch.long),
                                   priors_valid=torch.tensor([[True] * 10,
                                                              [False] * 10]))
    assert result.gt_inds.shape == (2, 10)
    assert result.gt_inds[0].eq(0).all() and result.gt_inds[1].eq(-1).all()
    assert result.labels.eq(-1).all()


def test_large_batch_is_fast_and_chunked():
    """B=2, G=50, N=200k: the IoU is computed a block of priors at a time
    (cache-sized temporaries)."""
    g = torch.Generator().manual_seed(0)
    priors = _random_boxes(200_000, size=1000., generator=g)
    gts = torch.stack([_random_boxes(50, size=1000., generator=g)
                       for _ in range(2)])
    labels = torch.randint(0, 80, (2, 50), generator=g)
    assigner = MaxIoUAssigner(0.5, 0.4)
    calls = []
    original = assigner.iou_calculator

    def counting(b1, b2, *args, **kwargs):
        calls.append((b1.shape[1], b2.shape[-2]))
        return original(b1, b2, *args, **kwargs)

    assigner.iou_calculator = counting
    start = time.perf_counter()
    result = assigner.assign_batch(priors, gts, labels)
    elapsed = time.perf_counter() - start
    # 2^18 elements per block / (2 * 50) -> 2621 priors per call.
    assert calls == [(50, 2621)] * 76 + [(50, 200_000 - 76 * 2621)]
    assert elapsed < 20
    ref = loop_reference(priors, gts[1], labels[1], 0.5, 0.4, 0., True)
    assert torch.equal(result.gt_inds[1], ref[0])


def test_assign_result_helpers():
    result = AssignResult(torch.tensor([2, 0]), torch.tensor([[1, 0, -1],
                                                              [0, 0, 0]]),
                          torch.tensor([[.9, .1, .45], [0., 0., 0.]]),
                          torch.tensor([[3, -1, -1], [-1, -1, -1]]))
    one = result.for_image(0)
    assert not one.is_batched and one.num_gts == 2 and one.num_preds == 3
    one.add_gt_(torch.tensor([5, 6]))
    assert one.gt_inds.tolist() == [1, 2, 1, 0, -1]
    assert one.labels.tolist() == [5, 6, 3, -1, -1]
    assert one.max_overlaps.tolist() == pytest.approx([1, 1, .9, .1, .45])
    assert 'pos=1' in repr(result.for_image(0))
    with pytest.raises(ValueError, match='same shape'):
        AssignResult(1, torch.zeros(3), torch.zeros(2), torch.zeros(3))


def test_bbox_overlaps_2d_calculator():
    calc = BboxOverlaps2D()
    a = torch.tensor([[0., 0., 10., 10., 0.9]])  # a score column is dropped
    b = torch.tensor([[5., 5., 15., 15.], [0., 0., 5., 5.]])
    torch.testing.assert_close(calc(a, b), torch.tensor([[25 / 175, .25]]))
    torch.testing.assert_close(calc(a, b, mode='iof'),
                               torch.tensor([[.25, .25]]))
    torch.testing.assert_close(calc(b, b, is_aligned=True),
                               torch.tensor([1., 1.]))
    half = BboxOverlaps2D(scale=8., dtype='fp16')
    out = half(a, b)
    assert out.dtype == torch.float32
    torch.testing.assert_close(out, calc(a, b), rtol=1e-3, atol=1e-3)
    with pytest.raises(ValueError, match='fp16'):
        BboxOverlaps2D(dtype='fp32')
