"""Property tests (hypothesis): overlaps, coder round trip, assignment
thresholds, NMS invariants on random and degenerate boxes."""
import math

import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from detkit.models.layers import batched_nms
from detkit.models.task_modules.assigners import MaxIoUAssigner
from detkit.models.task_modules.coders import DeltaXYWHBBoxCoder
from detkit.structures import bbox_overlaps

SETTINGS = settings(max_examples=60, deadline=None)

coord = st.floats(-1e5, 1e5, width=32, allow_nan=False)
size = st.one_of(st.just(0.), st.floats(0, 1e5, width=32),
                 st.floats(0, 10, width=32))


@st.composite
def box_sets(draw, min_size=0, max_size=12, coords=coord, sizes=size):
    """``(n, 4)`` float32 boxes incl. zero-size, duplicated and huge ones."""
    n = draw(st.integers(min_size, max_size))
    rows = []
    for _ in range(n):
        if rows and draw(st.booleans()) and draw(st.booleans()):
            rows.append(rows[draw(st.integers(0, len(rows) - 1))])
            continue
        x, y, w, h = (draw(coords), draw(coords), draw(sizes), draw(sizes))
        rows.append([x, y, x + w, y + h])
    return torch.tensor(rows, dtype=torch.float32).reshape(n, 4)


@SETTINGS
@given(box_sets(), box_sets())
def test_overlaps_finite_bounded_symmetric(a, b):
    iou = bbox_overlaps(a, b)
    assert iou.shape == (len(a), len(b))
    assert torch.isfinite(iou).all()
    assert ((iou >= 0) & (iou <= 1)).all()
    assert torch.equal(iou, bbox_overlaps(b, a).T)
    iof = bbox_overlaps(a, b, mode='iof')
    assert torch.isfinite(iof).all() and ((iof >= 0) & (iof <= 1)).all()
    assert (iof >= iou).all()
    # Aligned mode is the diagonal of the full matrix.
    n = min(len(a), len(b))
    assert torch.equal(bbox_overlaps(a[:n], b[:n], is_aligned=True),
                       bbox_overlaps(a[:n], b[:n]).diagonal())
    # A box overlaps itself fully (unless its area is below the eps).
    areas = (a[:, 2] - a[:, 0]) * (a[:, 3] - a[:, 1])
    self_iou = bbox_overlaps(a, a, is_aligned=True)
    assert (self_iou[areas >= 1e-6] == 1).all()


@st.composite
def prior_gt_pairs(draw):
    """Positive-size priors and GTs whose size ratio stays inside the
    decoder's clamp exp(±4.135)."""
    n = draw(st.integers(1, 20))
    rows_p, rows_g = [], []
    pos = st.floats(-1e3, 1e4, width=32)
    for _ in range(n):
        px, py = draw(pos), draw(pos)
        pw, ph = draw(st.floats(0.5, 1e3)), draw(st.floats(0.5, 1e3))
        gw = pw * math.exp(draw(st.floats(-4, 4)))
        gh = ph * math.exp(draw(st.floats(-4, 4)))
        gx, gy = px + draw(st.floats(-5, 5)) * pw, py + draw(
            st.floats(-5, 5)) * ph
        rows_p.append([px, py, px + pw, py + ph])
        rows_g.append([gx, gy, gx + gw, gy + gh])
    return torch.tensor(rows_p), torch.tensor(rows_g)


@SETTINGS
@given(prior_gt_pairs(), st.sampled_from([(1., 1., 1., 1.),
                                          (.1, .1, .2, .2)]))
def test_decode_inverts_encode(pairs, stds):
    priors, gts = pairs
    # Keep only pairs whose float32 sizes are still positive.
    keep = ((gts[:, 2:] - gts[:, :2]) > 0).all(1) & (
        (priors[:, 2:] - priors[:, :2]) > 0).all(1)
    priors, gts = priors[keep], gts[keep]
    coder = DeltaXYWHBBoxCoder(target_stds=stds)
    deltas = coder.encode(priors, gts)
    assert torch.isfinite(deltas).all()
    back = coder.decode(priors, deltas)
    scale = torch.cat([priors, gts], 1).abs().amax(1, keepdim=True) + 1
    assert ((back - gts).abs() <= 2e-5 * scale).all()


@SETTINGS
@given(
    box_sets(min_size=1, max_size=30,
             coords=st.floats(0, 200, width=32),
             sizes=st.floats(0, 80, width=32)),
    box_sets(min_size=0, max_size=5,
             coords=st.floats(0, 200, width=32),
             sizes=st.floats(1, 80, width=32)),
    st.floats(0.3, 0.8), st.floats(0.0, 1.0), st.floats(0.0, 0.5),
    st.booleans())
def test_assignment_respects_thresholds(priors, gts, pos_thr, neg_frac,
                                        min_pos, assign_all):
    neg_thr = pos_thr * neg_frac
    assigner = MaxIoUAssigner(pos_thr, neg_thr, min_pos_iou=min_pos,
                              gt_max_assign_all=assign_all)
    labels = torch.arange(len(gts)) + 10
    result = assigner.assign_batch(priors, gts[None], labels[None])
    gt_inds, max_ov = result.gt_inds[0], result.max_overlaps[0]
    if len(gts) == 0:
        assert (gt_inds == 0).all() and (max_ov == 0).all()
        return
    overlaps = bbox_overlaps(gts, priors)
    gt_max, gt_argmax = overlaps.max(1)
    assert torch.equal(max_ov, overlaps.max(0).values)
    # Low-quality candidates: priors at a GT's best IoU >= min_pos_iou
    # (all of them, or the first one).
    claimed = overlaps == gt_max[:, None]
    if not assign_all:
        claimed = torch.zeros_like(claimed)
        claimed[torch.arange(len(gts)), gt_argmax] = True
    claimed &= gt_max[:, None] >= min_pos
    for p in range(len(priors)):
        k = int(gt_inds[p])
        if k > 0:
            assert int(result.labels[0, p]) == 10 + k - 1
            low_quality = bool(claimed[k - 1, p])
            assert low_quality or (max_ov[p] >= pos_thr and
                                   overlaps[k - 1, p] == max_ov[p])
        else:
            assert int(result.labels[0, p]) == -1
            assert not claimed[:, p].any()
            if k == 0:
                assert 0 <= max_ov[p] < neg_thr
            else:
                assert neg_thr <= max_ov[p] < pos_thr
    # The same GTs padded inside a bigger batch give the same answer.
    padded = torch.cat([gts, torch.zeros(2, 4)])[None].repeat(2, 1, 1)
    valid = torch.ones(2, len(gts) + 2, dtype=torch.bool)
    valid[:, len(gts):] = False
    valid[1] = False
    lab = torch.cat([labels, torch.zeros(2, dtype=torch.long)])[None]
    batch = assigner.assign_batch(priors, padded, lab.repeat(2, 1), valid)
    assert torch.equal(batch.gt_inds[0], gt_inds)
    assert (batch.gt_inds[1] == 0).all()


@SETTINGS
@given(
    # Sizes are 0 or >= 1/16: a box a few ulps wide can collapse to zero
    # width under the class shift (mmcv's trick), which legitimately
    # changes its IoU with an identical box from 1 to 0.
    box_sets(min_size=0, max_size=40,
             coords=st.floats(0, 300, width=32),
             sizes=st.one_of(st.just(0.), st.floats(0.0625, 100, width=32))),
    st.data(), st.floats(0.1, 0.9))
def test_nms_keeps_no_overlapping_same_class_pair(boxes, data, thr):
    n = len(boxes)
    scores = torch.tensor(
        data.draw(st.lists(st.floats(0, 1, width=32), min_size=n,
                           max_size=n)), dtype=torch.float32)
    idxs = torch.tensor(
        data.draw(st.lists(st.integers(0, 3), min_size=n, max_size=n)),
        dtype=torch.long)
    dets, keep = batched_nms(boxes, scores, idxs,
                             dict(type='nms', iou_threshold=thr))
    assert torch.equal(dets[:, :4], boxes[keep])
    assert torch.equal(dets[:, 4], scores[keep])
    assert (dets[1:, 4] <= dets[:-1, 4]).all()
    assert len(set(keep.tolist())) == len(keep)
    iou = bbox_overlaps(boxes, boxes)
    same = idxs[:, None] == idxs[None, :]
    kept = torch.zeros(n, dtype=torch.bool)
    kept[keep] = True
    # The shift that separates classes can move IoUs by float rounding.
    tol = 1e-4
    pair = kept[:, None] & kept[None, :] & same
    pair.fill_diagonal_(False)
    assert (iou[pair] <= thr + tol).all()
    for i in (~kept).nonzero().flatten().tolist():
        blockers = kept & same[i] & (scores >= scores[i]) & (iou[i] >
                                                             thr - tol)
        assert blockers.any(), f'box {i} suppressed without a reason'
