"""Property tests (hypothesis) that complete
tests/test_models/test_task_modules/test_task_module_properties.py (IoU
bounds and symmetry, encode/decode round trip, assignment thresholds,
batched NMS): the other box ops, decoding arbitrary network outputs, and
multi-class NMS, on random and degenerate boxes."""
import math

import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from detkit.models.layers import multiclass_nms
from detkit.models.task_modules.coders import DeltaXYWHBBoxCoder
from detkit.structures import (bbox_clip, bbox_cxcywh_to_xyxy, bbox_flip,
                               bbox_overlaps, bbox_xyxy_to_cxcywh)

SETTINGS = settings(max_examples=60, deadline=None)


@st.composite
def boxes(draw, max_n=12, lo=-1e4, hi=1e4, max_size=1e4, min_size=0.):
    """``(n, 4)`` float32 boxes: zero-size, duplicated, tiny and huge;
    non-zero sizes are at least ``min_size``."""
    n = draw(st.integers(0, max_n))
    coord = st.floats(lo, hi, width=32)
    size = st.one_of(st.just(0.), st.floats(min_size, 1, width=32),
                     st.floats(min_size, max_size, width=32))
    rows = []
    for _ in range(n):
        if rows and draw(st.integers(0, 3)) == 0:
            rows.append(rows[-1])
            continue
        x, y = draw(coord), draw(coord)
        rows.append([x, y, x + draw(size), y + draw(size)])
    return torch.tensor(rows, dtype=torch.float32).reshape(n, 4)


@SETTINGS
@given(boxes(), st.integers(1, 5000), st.integers(1, 5000))
def test_convert_flip_clip(b, h, w):
    scale = b.abs().amax() + max(h, w) if len(b) else 1.0
    back = bbox_cxcywh_to_xyxy(bbox_xyxy_to_cxcywh(b))
    assert ((back - b).abs() <= 1e-6 * scale).all()
    for direction in ('horizontal', 'vertical', 'diagonal'):
        flipped = bbox_flip(b, (h, w), direction)
        # A mirror keeps sizes (x2 >= x1 stays true) and is an involution.
        assert torch.equal(flipped[:, 2:] - flipped[:, :2] >= 0,
                           b[:, 2:] - b[:, :2] >= 0)
        twice = bbox_flip(flipped, (h, w), direction)
        assert ((twice - b).abs() <= 1e-6 * scale).all()
    clipped = bbox_clip(b, (h, w))
    assert (clipped[:, 0::2] >= 0).all() and (clipped[:, 0::2] <= w).all()
    assert (clipped[:, 1::2] >= 0).all() and (clipped[:, 1::2] <= h).all()
    assert torch.equal(bbox_clip(clipped, (h, w)), clipped)
    inside = ((b[:, :2] >= 0) & (b[:, 2:] <= b.new_tensor([w, h]))).all(1)
    assert torch.equal(clipped[inside], b[inside])
    # A clipped box overlaps the image at most as much as the box itself.
    image = b.new_tensor([[0, 0, w, h]])
    assert (bbox_overlaps(clipped, image, mode='iof') <= 1).all()


deltas = st.lists(
    st.one_of(st.floats(-1e4, 1e4, width=32), st.floats(-20, 20, width=32)),
    min_size=4, max_size=4)


@SETTINGS
@given(boxes(max_n=10, lo=-100, hi=1000, max_size=1000), st.data(),
       st.sampled_from([(1., 1., 1., 1.), (.1, .1, .2, .2)]),
       st.booleans())
def test_decode_any_output_gives_finite_boxes_on_the_image(
        priors, data, stds, ctr_clamp):
    """A young or diverging network outputs any deltas: decoded boxes stay
    finite, well ordered, at most ``exp(4.135)`` times the prior's size,
    and inside the image when clipped."""
    n = len(priors)
    pred = torch.tensor(
        [data.draw(deltas) for _ in range(n)], dtype=torch.float32
    ).reshape(n, 4)
    coder = DeltaXYWHBBoxCoder(target_stds=stds, add_ctr_clamp=ctr_clamp)
    out = coder.decode(priors, pred)
    assert out.shape == (n, 4) and torch.isfinite(out).all()
    wh, prior_wh = out[:, 2:] - out[:, :2], priors[:, 2:] - priors[:, :2]
    assert (wh >= 0).all()
    max_ratio = math.exp(abs(math.log(16 / 1000)))
    # float32 rounds coordinates far from 0 by up to 2**-23 of their size
    rounding = out.abs().amax(1, keepdim=True) * 2.5e-7
    assert (wh <= prior_wh * max_ratio * (1 + 1e-6) + 2 * rounding).all()
    clipped = coder.decode(priors, pred, max_shape=(480, 640))
    assert torch.isfinite(clipped).all()
    assert (clipped[:, 0::2] >= 0).all() and (clipped[:, 0::2] <= 640).all()
    assert (clipped[:, 1::2] >= 0).all() and (clipped[:, 1::2] <= 480).all()


@SETTINGS
# Sizes are 0 or >= 1/16, as in test_task_module_properties.py: NMS shifts
# each class by an offset (mmcv's trick), under which a box a few ulps
# tall collapses and no longer suppresses its duplicate.
@given(boxes(max_n=30, lo=0, hi=300, max_size=100, min_size=0.0625),
       st.data(),
       st.floats(0.05, 0.95), st.floats(0, 0.9), st.integers(-1, 20))
def test_multiclass_nms_invariants(b, data, iou_thr, score_thr, max_num):
    n, num_classes = len(b), 3
    scores = torch.tensor(
        data.draw(st.lists(st.floats(0, 1, width=32),
                           min_size=n * (num_classes + 1),
                           max_size=n * (num_classes + 1))),
        dtype=torch.float32).reshape(n, num_classes + 1)
    dets, labels, inds = multiclass_nms(
        b, scores, score_thr, dict(type='nms', iou_threshold=iou_thr),
        max_num=max_num, return_inds=True)
    k = len(dets)
    assert dets.shape == (k, 5) and labels.shape == inds.shape == (k, )
    assert torch.isfinite(dets).all()
    if max_num > 0:
        assert k <= max_num
    # Each detection is an input (box, class) pair above the threshold...
    box_idx, cls_idx = inds // num_classes, inds % num_classes
    assert torch.equal(cls_idx, labels) and (labels < num_classes).all()
    assert torch.equal(dets[:, :4], b[box_idx])
    assert torch.equal(dets[:, 4], scores[box_idx, cls_idx])
    assert (dets[:, 4] > score_thr).all()
    assert (dets[1:, 4] <= dets[:-1, 4]).all() and len(set(inds.tolist())) \
        == k
    # ...no two kept boxes of a class overlap beyond the threshold (up to
    # the float rounding of the per-class offset)...
    same = labels[:, None] == labels[None, :]
    iou = bbox_overlaps(dets[:, :4], dets[:, :4])
    pair = same & ~torch.eye(k, dtype=torch.bool)
    assert (iou[pair] <= iou_thr + 1e-4).all()
    # ...and with no limit, every candidate the class's NMS kept is there:
    # the best-scoring candidate of each class always survives.
    if max_num <= 0:
        for c in range(num_classes):
            above = scores[:, c] > score_thr
            if above.any():
                assert (labels == c).any()
                best = scores[above, c].max()
                assert dets[labels == c, 4].max() == best
