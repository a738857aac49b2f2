"""ATSSAssigner: hand-worked cases (candidate count, mean + std threshold,
centre-inside rule, a prior claimed twice, removed priors), and the batched
assignment against a plain per-image loop, bit for bit, on random, tied and
degenerate batches."""
import math
import statistics

import pytest
import torch
from mmengine.structures import InstanceData

from detkit.models.task_modules.assigners import ATSSAssigner
from detkit.models.task_modules.prior_generators import AnchorGenerator
from detkit.registry import TASK_UTILS
from detkit.structures import bbox_overlaps

INF = 100000000


# --------------------------------------------------------------- reference
def reference_atss(priors, num_level_priors, gt_bboxes, gt_labels, topk,
                   ignore=None, ignore_iof_thr=-1):
    """One image, the algorithm step by step (priors already stripped of
    the invalid ones). Returns gt_inds, max_overlaps, labels (N,)."""
    num_priors, num_gts = priors.size(0), gt_bboxes.size(0)
    gt_inds = torch.zeros(num_priors, dtype=torch.long)
    if num_gts == 0 or num_priors == 0:
        return (gt_inds, torch.zeros(num_priors),
                torch.full((num_priors, ), -1, dtype=torch.long))
    ious = bbox_overlaps(priors, gt_bboxes)  # (N, G)
    gt_points = torch.stack(((gt_bboxes[:, 0] + gt_bboxes[:, 2]) / 2.0,
                             (gt_bboxes[:, 1] + gt_bboxes[:, 3]) / 2.0), 1)
    cx = (priors[:, 0] + priors[:, 2]) / 2.0
    cy = (priors[:, 1] + priors[:, 3]) / 2.0
    points = torch.stack((cx, cy), 1)
    dist = (points[:, None, :] - gt_points[None, :, :]).pow(2).sum(-1).sqrt()
    if ignore_iof_thr > 0 and ignore is not None and ignore.numel() > 0:
        ignored = bbox_overlaps(priors, ignore, mode='iof').max(1).values \
            > ignore_iof_thr
        dist[ignored, :] = INF
        gt_inds[ignored] = -1
    candidates, start = [], 0
    for num in num_level_priors:
        k = min(topk, num)
        _, idx = dist[start:start + num].topk(k, dim=0, largest=False)
        candidates.append(idx + start)
        start += num
    candidates = torch.cat(candidates)  # (K, G)
    cand_ious = ious[candidates, torch.arange(num_gts)]
    thr = cand_ious.mean(0) + cand_ious.std(0)
    pos = cand_ious >= thr[None, :]
    ccx, ccy = cx[candidates], cy[candidates]
    inside = torch.stack([ccx - gt_bboxes[:, 0], ccy - gt_bboxes[:, 1],
                          gt_bboxes[:, 2] - ccx, gt_bboxes[:, 3] - ccy],
                         1).min(1).values > 0.01
    pos &= inside
    masked = torch.full((num_gts, num_priors), float(-INF))
    for g in range(num_gts):
        chosen = candidates[:, g][pos[:, g]]
        masked[g, chosen] = ious[chosen, g]
    max_overlaps, argmax = masked.t().max(1)
    hit = max_overlaps != -INF
    gt_inds[hit] = argmax[hit] + 1
    labels = torch.full((num_priors, ), -1, dtype=torch.long)
    labels[gt_inds > 0] = gt_labels[gt_inds[gt_inds > 0] - 1]
    return gt_inds, max_overlaps, labels


def reference_batch(priors, num_level_priors, gt_bboxes, gt_labels, gt_valid,
                    priors_valid, topk, ignore=None, ignore_valid=None,
                    ignore_iof_thr=-1):
    """Per image: remove the invalid priors and padded ground truths, run
    the reference, put the results back (removed priors: -1)."""
    num_imgs, num_priors = gt_bboxes.size(0), priors.size(0)
    gt_inds = torch.full((num_imgs, num_priors), -1, dtype=torch.long)
    max_overlaps = torch.full((num_imgs, num_priors), -1.)
    labels = torch.full((num_imgs, num_priors), -1, dtype=torch.long)
    for b in range(num_imgs):
        pv = (torch.ones(num_priors, dtype=torch.bool)
              if priors_valid is None else priors_valid[b])
        keep = pv.nonzero()[:, 0]
        counts, start = [], 0
        for num in num_level_priors:
            counts.append(int(pv[start:start + num].sum()))
            start += num
        gts = gt_valid[b].nonzero()[:, 0]
        ign = None
        if ignore is not None:
            ign = ignore[b][ignore_valid[b]]
        g, m, lab = reference_atss(priors[keep], counts, gt_bboxes[b][gts],
                                   gt_labels[b][gts], topk, ign,
                                   ignore_iof_thr)
        if len(gts):
            g = torch.where(g > 0, gts[(g - 1).clamp(min=0)] + 1, g)
        gt_inds[b, keep], max_overlaps[b, keep], labels[b, keep] = g, m, lab
    return gt_inds, max_overlaps, labels


def assert_same(result, expected):
    gt_inds, max_overlaps, labels = expected
    assert torch.equal(result.gt_inds, gt_inds)
    assert torch.equal(result.max_overlaps, max_overlaps)
    assert torch.equal(result.labels, labels)


# ------------------------------------------------------------ hand-worked
def _assign(priors, levels, gts, topk, labels=None, priors_valid=None):
    gts = torch.tensor(gts, dtype=torch.float32)
    labels = torch.arange(len(gts)) if labels is None else labels
    return ATSSAssigner(topk=topk).assign_batch(
        torch.tensor(priors, dtype=torch.float32), levels, gts[None],
        labels[None], priors_valid=priors_valid)


def test_registered_with_mmdet_defaults_and_errors():
    a = TASK_UTILS.build(dict(type='ATSSAssigner', topk=9))
    assert (a.topk, a.alpha, a.ignore_iof_thr) == (9, None, -1)
    with pytest.raises(NotImplementedError, match='remove alpha'):
        ATSSAssigner(topk=9, alpha=0.8)
    with pytest.raises(ValueError, match='positive int'):
        ATSSAssigner(topk=0)
    with pytest.raises(ValueError, match='sum to 5, but there are 4'):
        a.assign_batch(torch.zeros(4, 4), [3, 2], torch.zeros(1, 1, 4),
                       torch.zeros(1, 1, dtype=torch.long))
    with pytest.raises(ValueError, match=r'priors_valid must be \(B, N\)'):
        a.assign_batch(torch.zeros(4, 4), [4], torch.zeros(2, 1, 4),
                       torch.zeros(2, 1, dtype=torch.long),
                       priors_valid=torch.ones(1, 4, dtype=torch.bool))


def test_candidates_are_topk_per_level_by_centre_distance():
    """Three levels of 5x5 anchors (strides 8, 16, 32); every level has at
    least topk priors, so each ground truth gets topk x levels candidates,
    the nearest on each level."""
    gen = AnchorGenerator(strides=[8, 16, 32], ratios=[1.0],
                          octave_base_scale=4, scales_per_octave=1)
    sizes = [(6, 6), (3, 3), (2, 2)]
    priors = torch.cat(gen.grid_priors(sizes))
    levels = [36, 9, 4]
    gts = torch.tensor([[[1., 2., 19., 17.], [20., 5., 45., 40.]]])
    a = ATSSAssigner(topk=3)
    # (B, G, N) centre distances
    dist = ((((priors[:, 0] + priors[:, 2]) / 2)[None, None, :] -
             ((gts[..., 0] + gts[..., 2]) / 2)[:, :, None])**2 +
            (((priors[:, 1] + priors[:, 3]) / 2)[None, None, :] -
             ((gts[..., 1] + gts[..., 3]) / 2)[:, :, None])**2).sqrt()
    idxs, slots = a._candidates(dist, levels, None)
    assert idxs.shape == (1, 2, 3 * 3) and slots.shape == (1, 9)
    assert slots.all()
    for g, centre in enumerate([(10., 9.5), (32.5, 22.5)]):
        start = 0
        for lvl, (num, s) in enumerate(zip(levels, [8, 16, 32])):
            chosen = idxs[0, g, 3 * lvl:3 * lvl + 3]
            w = sizes[lvl][1]
            d = [math.hypot((i % w) * s - centre[0], (i // w) * s - centre[1])
                 for i in range(num)]
            # the three chosen are the three nearest anchor centres
            assert sorted(d[i - start] for i in chosen.tolist()) == \
                sorted(d)[:3]
            assert ((chosen >= start) & (chosen < start + num)).all()
            start += num
    # a level with fewer priors than topk gives all of them
    idxs, _ = ATSSAssigner(topk=5)._candidates(dist, levels, None)
    assert idxs.shape == (1, 2, 5 + 5 + 4)


def test_threshold_is_mean_plus_unbiased_std_by_hand():
    """topk=2 over two levels; the ground truth [13, 0, 29, 10] (centre
    (21, 5)) has as candidates the level-0 boxes centred at x = 25 and 15
    and both level-1 boxes."""
    priors = [[0, 0, 10, 10], [10, 0, 20, 10], [20, 0, 30, 10],
              [30, 0, 40, 10], [0, -5, 20, 15], [20, -5, 40, 15]]
    gt = [13., 0., 29., 10.]
    ious = {1: 70 / 190, 2: 90 / 170, 4: 70 / 490, 5: 90 / 470}
    thr = statistics.mean(ious.values()) + statistics.stdev(ious.values())
    assert thr == pytest.approx(0.484605, abs=1e-6)
    a = ATSSAssigner(topk=2)
    pri = torch.tensor(priors, dtype=torch.float32)
    gts = torch.tensor([[gt]])
    valid = torch.ones(1, 1, dtype=torch.bool)
    # every centre has y = 5 like the ground truth's: distance |cx - 21|
    cx = (pri[:, 0] + pri[:, 2]) / 2
    dist = (cx - 21.).abs()[None, None, :]
    idxs, slots = a._candidates(dist, [4, 2], None)
    assert sorted(idxs[0, 0].tolist()) == [1, 2, 4, 5]
    cand_ious = a.iou_calculator(gts, pri).gather(2, idxs)  # (B, G, K)
    ours = a._thresholds(cand_ious, slots, valid)
    assert ours.item() == pytest.approx(thr, rel=1e-6)
    # Only the x = 25 box reaches mean + std (the x = 15 one, 0.368, only
    # passes the mean 0.308).
    r = _assign(priors, [4, 2], [gt], topk=2)
    assert r.gt_inds.tolist() == [[0, 0, 1, 0, 0, 0]]
    assert r.max_overlaps[0, 2].item() == pytest.approx(90 / 170)
    assert (r.max_overlaps[0, [0, 1, 3, 4, 5]] == -INF).all()
    assert r.labels.tolist() == [[-1, -1, 0, -1, -1, -1]]


@pytest.mark.parametrize('x2,positive', [
    (18.96, True),  # centre 9.98: 0.02 inside the right edge
    (18.99, False),  # centre 9.995: inside, but by less than 0.01
    (19.02, False),  # centre 10.01: outside
])
def test_centre_must_lie_inside_the_box(x2, positive):
    """topk=1 on three levels: the box [1, 0, x2, 10] and two far boxes.
    Its IoU with [0, 0, 10, 10] passes mean + std in all three cases, so
    only the centre rule decides."""
    priors = [[1, 0, x2, 10], [100, 100, 110, 110], [200, 0, 210, 10]]
    iou = 90 / (100 + (x2 - 1) * 10 - 90)
    thr = statistics.mean([iou, 0, 0]) + statistics.stdev([iou, 0, 0])
    assert iou > thr + 0.03
    r = _assign(priors, [1, 1, 1], [[0., 0., 10., 10.]], topk=1)
    assert r.gt_inds.tolist() == [[1 if positive else 0, 0, 0]]


@pytest.mark.parametrize('order,winner', [((0, 1), 2), ((1, 0), 1)])
def test_prior_claimed_by_two_gts_goes_to_higher_iou(order, winner):
    """The box [0, 0, 11, 10] is positive for [0, 0, 10, 10] (IoU 10/11)
    and for [0, 0, 12, 10] (IoU 11/12), wherever the latter sits."""
    gts = [[0., 0., 10., 10.], [0., 0., 12., 10.]]
    gts = [gts[i] for i in order]
    priors = [[0, 0, 11, 10], [100, 100, 110, 110], [200, 0, 210, 10]]
    labels = torch.tensor([7, 9])
    r = _assign(priors, [1, 1, 1], gts, topk=1, labels=labels)
    assert r.gt_inds.tolist() == [[winner, 0, 0]]
    assert r.max_overlaps[0, 0].item() == pytest.approx(11 / 12)
    assert r.labels[0, 0].item() == labels[winner - 1].item()
    # identical ground truths tie: the first one wins
    r = _assign(priors, [1, 1, 1], [gts[0], gts[0]], topk=1)
    assert r.gt_inds[0, 0].item() == 1


def test_removed_prior_is_not_a_candidate():
    """topk=2. Level 0 holds A = [0, 0, 10, 10] and X = [0, 0, 12, 10],
    level 1 C = [0, 0, 20, 20] and D = [40, 40, 60, 60]; the ground truth is
    [0, 0, 11, 10]. Image 0 keeps all four, image 1 loses X (outside its
    padded area): its level 0 then gives one candidate, not two, and A
    becomes positive. Setting X's distance to infinity instead would keep X
    a candidate (its level has only topk priors) and A negative."""
    a_iou, x_iou, c_iou, d_iou = 100 / 110, 110 / 120, 110 / 400, 0.
    with_x = [a_iou, x_iou, c_iou, d_iou]
    without_x = [a_iou, c_iou, d_iou]
    thr_with = statistics.mean(with_x) + statistics.stdev(with_x)
    thr_without = statistics.mean(without_x) + statistics.stdev(without_x)
    assert a_iou < thr_with and a_iou > thr_without
    priors = [[0, 0, 10, 10], [0, 0, 12, 10], [0, 0, 20, 20],
              [40, 40, 60, 60]]
    valid = torch.tensor([[True, True, True, True],
                          [True, False, True, True]])
    gt = [[0., 0., 11., 10.]]
    gts = torch.tensor([gt, gt])
    r = ATSSAssigner(topk=2).assign_batch(
        torch.tensor(priors, dtype=torch.float32), [2, 2], gts,
        torch.zeros(2, 1, dtype=torch.long), priors_valid=valid)
    assert r.gt_inds.tolist() == [[0, 0, 0, 0], [1, -1, 0, 0]]
    assert r.max_overlaps[1].tolist() == [
        pytest.approx(a_iou), -1., -INF, -INF]
    assert r.labels.tolist() == [[-1] * 4, [0, -1, -1, -1]]


def test_ignored_prior_gets_minus_one_unless_positive():
    """With ignore_iof_thr, a prior inside an ignore box gets -1 (and an
    infinite distance); the other priors are unaffected."""
    priors = torch.tensor([[0., 0., 10., 10.], [30., 30., 40., 40.],
                           [100., 100., 110., 110.], [0., 0., 20., 20.],
                           [200., 200., 220., 220.]])
    gts = torch.tensor([[[0., 0., 10., 10.]]])
    ignore = torch.tensor([[[25., 25., 45., 45.]]])
    a = ATSSAssigner(topk=2, ignore_iof_thr=0.5)
    r = a.assign_batch(priors, [3, 2], gts, torch.tensor([[4]]),
                       gt_bboxes_ignore=ignore)
    assert r.gt_inds.tolist() == [[1, -1, 0, 0, 0]]
    expected = reference_batch(priors, [3, 2], gts, torch.tensor([[4]]),
                               torch.ones(1, 1, dtype=torch.bool), None, 2,
                               ignore, torch.ones(1, 1, dtype=torch.bool),
                               0.5)
    assert_same(r, expected)
    # disabled by default
    r = ATSSAssigner(topk=2).assign_batch(priors, [3, 2], gts,
                                          torch.tensor([[4]]),
                                          gt_bboxes_ignore=ignore)
    assert r.gt_inds[0, 1].item() == 0


def test_empty_cases():
    a = ATSSAssigner(topk=3)
    priors = torch.tensor([[0., 0., 10., 10.], [5., 5., 15., 15.]])
    valid = torch.tensor([[True, False]])
    r = a.assign_batch(priors, [2], torch.zeros(1, 0, 4),
                       torch.zeros(1, 0, dtype=torch.long), priors_valid=valid)
    assert r.gt_inds.tolist() == [[0, -1]]
    assert r.max_overlaps.tolist() == [[0., -1.]]
    assert r.labels.tolist() == [[-1, -1]]
    assert r.num_gts.tolist() == [0]
    r = a.assign_batch(torch.zeros(0, 4), [0, 0], torch.ones(2, 3, 4),
                       torch.zeros(2, 3, dtype=torch.long))
    assert r.gt_inds.shape == (2, 0) and r.num_gts.tolist() == [3, 3]
    # one image of the batch without ground truth: all 0, IoU 0
    gts = torch.tensor([[[0., 0., 10., 10.]], [[0., 0., 0., 0.]]])
    r = a.assign_batch(priors, [2], gts, torch.zeros(2, 1, dtype=torch.long),
                       gt_valid=torch.tensor([[True], [False]]))
    assert r.gt_inds[1].tolist() == [0, 0]
    assert r.max_overlaps[1].tolist() == [0., 0.]
    # Two candidates of IoU a > b: mean + std = (a + b) / 2 + (a - b) /
    # sqrt(2) exceeds a, so neither is positive.
    assert r.gt_inds[0].tolist() == [0, 0]
    assert r.max_overlaps[0].tolist() == [-INF, -INF]


def test_single_image_interface_matches_batch():
    g = torch.Generator().manual_seed(3)
    priors, levels, _, _ = _atss_priors((96, 128))
    gts = _random_gts(g, 1, 6, 96, 128)[0]
    labels = torch.randint(0, 80, (6, ), generator=g)
    a = ATSSAssigner(topk=9)
    r = a.assign(InstanceData(priors=priors), levels,
                 InstanceData(bboxes=gts, labels=labels))
    assert r.num_gts == 6 and r.gt_inds.shape == (len(priors), )
    expected = reference_atss(priors, levels, gts, labels, 9)
    assert torch.equal(r.gt_inds, expected[0])
    assert torch.equal(r.max_overlaps, expected[1])
    assert torch.equal(r.labels, expected[2])
    assert (r.gt_inds > 0).sum() >= 6  # every object gets a positive here


# ----------------------------------------------------- batch vs reference
def _atss_priors(input_hw):
    """ATSS's anchors (8x base, one per location) on a padded input."""
    gen = AnchorGenerator(strides=[8, 16, 32, 64, 128], ratios=[1.0],
                          octave_base_scale=8, scales_per_octave=1)
    sizes = [(math.ceil(input_hw[0] / s), math.ceil(input_hw[1] / s))
             for s in (8, 16, 32, 64, 128)]
    priors = gen.grid_priors(sizes)
    return torch.cat(priors), [len(p) for p in priors], gen, sizes


def _random_gts(g, num_imgs, num_gts, h, w, tied=False):
    if tied:
        # centres and half sizes on multiples of 4: centre distances to the
        # stride-8 grid tie in pairs and quadruples, IoUs tie by symmetry.
        cx = torch.randint(0, w // 4, (num_imgs, num_gts), generator=g) * 4.
        cy = torch.randint(0, h // 4, (num_imgs, num_gts), generator=g) * 4.
        hw = torch.randint(1, 12, (num_imgs, num_gts, 2), generator=g) * 4.
    else:
        cx = torch.rand(num_imgs, num_gts, generator=g) * w
        cy = torch.rand(num_imgs, num_gts, generator=g) * h
        hw = torch.rand(num_imgs, num_gts, 2, generator=g) * 60 + 1
    return torch.stack([cx - hw[..., 0], cy - hw[..., 1], cx + hw[..., 0],
                        cy + hw[..., 1]], -1)


def _batch_case(seed, tied, pad_shapes, counts, input_hw=(160, 224)):
    g = torch.Generator().manual_seed(seed)
    priors, levels, gen, sizes = _atss_priors(input_hw)
    num_imgs, num_gts = len(counts), max(counts + [1])
    gts = _random_gts(g, num_imgs, num_gts, *input_hw, tied=tied)
    gt_valid = torch.arange(num_gts)[None, :] < torch.tensor(counts)[:, None]
    # Padding rows are real-looking boxes: they must still never win.
    gts = torch.where(gt_valid[..., None], gts,
                      torch.tensor([0., 0., 224., 160.]))
    labels = torch.randint(0, 80, (num_imgs, num_gts), generator=g)
    valid = torch.stack([
        torch.cat(gen.valid_flags(sizes, pad)) for pad in pad_shapes
    ])
    return priors, levels, gts, labels, gt_valid, valid


PAD_SETS = {
    'same': [(160, 224)] * 3,
    'mixed': [(160, 224), (128, 160), (96, 224)],
    # 32x64 keeps 1x1 cells on the two coarsest levels: fewer than topk
    'tiny': [(160, 224), (32, 64), (64, 32)],
}


@pytest.mark.parametrize('tied', [False, True])
@pytest.mark.parametrize('pads', list(PAD_SETS))
@pytest.mark.parametrize('seed', [0, 1, 2])
def test_batch_equals_per_image_reference(seed, pads, tied):
    counts = [[5, 2, 7], [3, 3, 3], [1, 0, 12]][seed]
    priors, levels, gts, labels, gt_valid, valid = _batch_case(
        seed, tied, PAD_SETS[pads], counts)
    a = ATSSAssigner(topk=9)
    pv = None if pads == 'same' else valid
    r = a.assign_batch(priors, levels, gts, labels, gt_valid, pv)
    assert r.num_gts.tolist() == counts
    expected = reference_batch(priors, levels, gts, labels, gt_valid, pv, 9)
    assert_same(r, expected)
    pos = r.gt_inds > 0
    assert pos.sum() > 0
    # padded ground truths are never assigned
    assert gt_valid.gather(1, (r.gt_inds - 1).clamp(min=0))[pos].all()
    if pv is not None:
        assert (r.gt_inds[~pv] == -1).all()


def test_batch_with_gt_holes_ignores_and_duplicates():
    """Validity masks with holes, duplicated and zero-area boxes, ignore
    boxes with padding, an all-padding image: still the per-image
    reference."""
    g = torch.Generator().manual_seed(7)
    priors, levels, gen, sizes = _atss_priors((160, 224))
    gts = _random_gts(g, 4, 6, 160, 224, tied=True)
    gts[0, 3] = gts[0, 1]  # identical boxes: IoU ties, first wins
    gts[1, 2] = torch.tensor([50., 50., 50., 50.])  # zero area
    gts[1, 4] = torch.tensor([300., 300., 340., 340.])  # off the image
    gt_valid = torch.tensor([[1, 1, 0, 1, 1, 0], [1, 0, 1, 1, 1, 1],
                             [0, 0, 0, 0, 0, 0], [0, 1, 0, 1, 0, 1]],
                            dtype=torch.bool)
    labels = torch.randint(0, 80, (4, 6), generator=g)
    ignore = _random_gts(g, 4, 3, 160, 224)
    ignore_valid = torch.tensor([[1, 1, 0], [0, 0, 0], [1, 0, 0], [1, 1, 1]],
                                dtype=torch.bool)
    valid = torch.stack([
        torch.cat(gen.valid_flags(sizes, pad))
        for pad in [(160, 224), (96, 128), (160, 224), (40, 200)]
    ])
    a = ATSSAssigner(topk=9, ignore_iof_thr=0.3)
    r = a.assign_batch(priors, levels, gts, labels, gt_valid, valid, ignore,
                       ignore_valid)
    expected = reference_batch(priors, levels, gts, labels, gt_valid, valid,
                               9, ignore, ignore_valid, 0.3)
    assert_same(r, expected)
    assert (r.gt_inds == -1)[valid].any()  # some priors are ignored
    assert (r.gt_inds[2] <= 0).all()
    assert not (r.gt_inds[0] == 4).any()  # the duplicate never wins


def test_thresholds_equal_per_image_mean_and_std_bitwise():
    """Each image's thresholds are torch's mean + std over exactly its own
    (K_b, G_b) candidate IoUs, bit for bit, whatever the padding. A plain
    mean over the padded (B, K, G) tensor is not: torch's summation order
    depends on the row length G."""
    g = torch.Generator().manual_seed(0)
    num_imgs, num_slots, num_gts = 8, 45, 64
    # (B, K, G): each image's block as mmdetection lays it out
    cand_ious = torch.rand(num_imgs, num_slots, num_gts, generator=g)
    gt_counts = [64, 2, 9, 17, 12, 0, 20, 30]
    gt_valid = torch.arange(num_gts)[None] < torch.tensor(gt_counts)[:, None]
    gt_valid[3] = gt_valid[3][torch.randperm(num_gts, generator=g)]  # holes
    cand_valid = torch.ones(num_imgs, num_slots, dtype=torch.bool)
    cand_valid[2, 40:] = False  # a coarse level with only 4 priors left
    cand_valid[4, 5:9] = False
    thr = ATSSAssigner._thresholds(cand_ious.transpose(1, 2), cand_valid,
                                   gt_valid)
    padded_mean_differs = False
    for b in range(num_imgs):
        assert thr[b][~gt_valid[b]].isnan().all()
        if gt_counts[b] == 0:
            continue
        block = cand_ious[b][cand_valid[b]][:, gt_valid[b]]
        expected = block.mean(0) + block.std(0)
        assert torch.equal(thr[b][gt_valid[b]], expected)
        if cand_valid[b].all() and gt_counts[b] < num_gts:
            padded = cand_ious[b:b + 1].mean(1)[0][gt_valid[b]]
            padded_mean_differs |= not torch.equal(padded, block.mean(0))
    assert padded_mean_differs
    # all images complete: one call over the batch, the same numbers
    full = torch.ones_like(gt_valid)
    thr = ATSSAssigner._thresholds(cand_ious.transpose(1, 2),
                                   torch.ones_like(cand_valid), full)
    for b in range(num_imgs):
        assert torch.equal(thr[b], cand_ious[b].mean(0) + cand_ious[b].std(0))


def test_topk_over_the_batch_equals_per_image_topk_with_ties():
    """What the batched candidate step relies on: torch.topk along the
    prior axis of (B, G, N_l) picks, for each image, what the image's own
    (N_l, G) call picks, ties included, on both of torch's CPU paths
    (partial sort when 64 k <= N_l, selection otherwise). Appending
    far-away entries instead can change which tied entries are picked,
    which is why removed priors are compacted, not pushed to infinity."""
    g = torch.Generator().manual_seed(0)
    for num in (5, 20, 100, 600, 2000):
        x = torch.randint(0, 3, (4, 7, num), generator=g).float()
        k = min(9, num)
        values, idxs = x.topk(k, dim=2, largest=False)
        for b in range(4):
            v, i = x[b].t().contiguous().topk(k, dim=0, largest=False)
            assert torch.equal(values[b], v.t())
            assert torch.equal(idxs[b], i.t())
    changed = 0
    for _ in range(50):
        x = torch.randint(0, 4, (20, ), generator=g).float()
        padded = torch.cat([x, torch.full((1, ), float(INF))])
        changed += not torch.equal(
            x.topk(9, largest=False)[1], padded.topk(9, largest=False)[1])
    assert changed > 0
