"""FCOSHead: the target rule in closed form and against a per-image loop
(bit for bit), the three losses on a hand-worked case, norm_on_bbox,
prediction order (top-k on the class score, then times the centerness),
empty images and low-precision outputs."""
import math

import pytest
import torch
from mmengine.config import ConfigDict
from mmengine.structures import InstanceData

from detkit.models.dense_heads import FCOSHead
from detkit.models.dense_heads.fcos_head import (INF, centerness_target,
                                                 fcos_targets)
from detkit.models.utils import pad_gts

STRIDES = [8, 16, 32, 64, 128]
TEST_CFG = dict(nms_pre=1000, min_bbox_size=0, score_thr=0.05,
                nms=dict(type='nms', iou_threshold=0.5), max_per_img=100)


def make_head(**kwargs):
    kwargs = dict(dict(num_classes=2, in_channels=8, feat_channels=8,
                       stacked_convs=1, strides=STRIDES,
                       norm_cfg=dict(type='GN', num_groups=2,
                                     requires_grad=True),
                       test_cfg=TEST_CFG), **kwargs)
    return FCOSHead(**kwargs)


def gt(boxes, labels=None):
    boxes = torch.tensor(boxes, dtype=torch.float32).reshape(-1, 4)
    if labels is None:
        labels = [0] * len(boxes)
    return InstanceData(bboxes=boxes, labels=torch.tensor(labels).long())


def targets_of(head, instances, size=(128, 128)):
    """The head's targets on a ``size`` input (feature maps of its
    strides); also returns the points and their level of each."""
    sizes = [(math.ceil(size[0] / s), math.ceil(size[1] / s))
             for s in head.strides]
    metas = [dict(img_shape=size, pad_shape=size)] * len(instances)
    points, valid, counts = head.get_priors(sizes, metas, 'cpu')
    assert bool(valid.all())  # every point of the padded batch counts
    targets = head.get_targets(points, valid, pad_gts(instances), metas,
                               counts)
    levels = torch.repeat_interleave(torch.arange(len(counts)),
                                     torch.tensor(counts))
    return targets, points, levels


def positives(targets, points, levels, img=0):
    """``{(x, y, level): (l, t, r, b)}`` of the positives of an image."""
    pos = targets['pos_mask'][img]
    return {(float(x), float(y), int(lvl)): tuple(d.tolist())
            for (x, y), lvl, d in zip(points[pos], levels[pos],
                                      targets['bbox_targets'][img][pos])}


# ------------------------------------------------------------ closed forms
def test_a_small_box_is_learnt_at_p3_only():
    # Every point inside a 40 px box is less than 40 px from each side:
    # below P4's range (64..128), so only P3 learns it, at its 5 x 5
    # points (4, 12, ..., 36) strictly inside.
    targets, points, levels = targets_of(make_head(), [gt([[0, 0, 40, 40]])])
    pos = positives(targets, points, levels)
    assert len(pos) == 25
    assert {lvl for _, _, lvl in pos} == {0}
    assert {x for x, _, _ in pos} == {4., 12., 20., 28., 36.}
    assert pos[(12., 20., 0)] == (12., 20., 28., 20.)


def test_docs_example_a_large_box_skips_p3_and_is_learnt_at_p5():
    # docs/fcos.md: [0, 0, 300, 200]; P3's (148, 100) has max distance 152,
    # outside -1..64; P5's (144, 112) has (144, 112, 156, 88), max 156.
    targets, points, levels = targets_of(make_head(),
                                         [gt([[0, 0, 300, 200]])],
                                         size=(256, 320))
    pos = positives(targets, points, levels)
    assert not [p for p in pos if p[2] in (0, 1)]
    assert (148., 100., 0) not in pos
    assert pos[(144., 112., 2)] == (144., 112., 156., 88.)
    # each positive's largest distance lies in its own level's range
    ranges = make_head().regress_ranges
    assert all(ranges[lvl][0] <= max(d) <= ranges[lvl][1]
               for (_, _, lvl), d in pos.items())


def test_regress_ranges_are_inclusive_at_both_ends():
    # P3's first point (4, 4) is 64 px from the left side of the first box:
    # in P3's range (-1, 64]; 64.5 px from the second: out of it.
    for x1, expected in ((-60., True), (-60.5, False)):
        targets, points, _ = targets_of(make_head(),
                                        [gt([[x1, 0, 20, 20]])])
        assert bool(targets['pos_mask'][0, 0]) is expected
        assert points[0].tolist() == [4., 4.]
    # P4's point (8, 8) is 68 px away: at least 64, in P4's range
    targets, points, levels = targets_of(make_head(), [gt([[-60, 0, 20,
                                                            20]])])
    assert (8., 8., 1) in positives(targets, points, levels)


def test_center_sampling_region_of_the_docs_example():
    # docs/fcos.md: [0, 0, 100, 60], centre (50, 30). P3 (half-side 12):
    # [38, 18, 62, 42], strictly inside: x in {44, 52, 60}, y in {20, 28,
    # 36}. P4 (half-side 24): [26, 6, 74, 54], points x in {40, 56, 72},
    # y in {8, 24, 40}, but only x = 72 reaches P4's range (max distance
    # 72 >= 64). P5 and above: no point is 128 px from a side.
    head = make_head(center_sampling=True, center_sample_radius=1.5)
    targets, points, levels = targets_of(head, [gt([[0, 0, 100, 60]])])
    pos = positives(targets, points, levels)
    assert sorted(p for p in pos if p[2] == 0) == [
        (x, y, 0) for x in (44., 52., 60.) for y in (20., 28., 36.)]
    assert sorted(p for p in pos if p[2] == 1) == [
        (72., y, 1) for y in (8., 24., 40.)]
    assert len(pos) == 12
    # (36, 28) lies in the box, but not in P3's centre region: positive
    # only without centre sampling
    assert (36., 28., 0) not in pos
    plain = positives(*targets_of(make_head(), [gt([[0, 0, 100, 60]])]))
    assert (36., 28., 0) in plain and len(plain) > len(pos)
    # the region is clipped to the box: a 3 px high box lies above P3's
    # first row (y = 4); unclipped, the square of half-side 12 around its
    # centre would take (12, 4), (20, 4), ... although they are outside it
    targets, _, _ = targets_of(head, [gt([[0, 0, 40, 3]])])
    assert not bool(targets['pos_mask'].any())


def test_centerness_is_one_at_the_centre_and_zero_on_an_edge():
    assert centerness_target(torch.tensor([[5., 3., 5., 3.]])).item() == 1.
    assert centerness_target(torch.tensor([[0., 3., 10., 3.]])).item() == 0.
    # docs/fcos.md: (52, 20, 48, 40) -> sqrt(48/52 * 20/40)
    assert centerness_target(torch.tensor([52., 20., 48., 40.])).item() == \
        pytest.approx(math.sqrt(48 / 52 * 20 / 40), rel=1e-6)
    assert math.sqrt(48 / 52 * 20 / 40) == pytest.approx(0.679366, abs=1e-6)


def test_the_smallest_box_wins_and_ties_go_to_the_first():
    # (20, 20) at P3 lies in all three boxes (all in range): the 30 x 30
    # box (area 900) beats the 40 x 40 one; of two equal 30 x 30 boxes the
    # first listed wins.
    boxes = [[0, 0, 40, 40], [5, 5, 35, 35], [6, 6, 36, 36]]
    targets, points, levels = targets_of(make_head(num_classes=3),
                                         [gt(boxes, [0, 1, 2])])
    at = (points[:, 0] == 20) & (points[:, 1] == 20) & (levels == 0)
    assert targets['labels'][0][at].item() == 1
    assert targets['bbox_targets'][0][at].tolist() == [[15., 15., 15., 15.]]
    swapped = [boxes[0], boxes[2], boxes[1]]
    targets, _, _ = targets_of(make_head(num_classes=3),
                               [gt(swapped, [0, 2, 1])])
    assert targets['labels'][0][at].item() == 2  # [6, 6, 36, 36] is first


# ------------------------------------------------ batch = per-image loop
def reference_targets(points, regress_ranges, radii, boxes, labels,
                      num_classes):
    """mmdetection's per-image rule, written as plainly as possible: one
    image, ``(N, G)`` tensors."""
    num_points, num_gts = points.size(0), boxes.size(0)
    if num_gts == 0:
        return (torch.full((num_points, ), num_classes, dtype=torch.long),
                torch.zeros((num_points, 4)))
    areas = ((boxes[:, 2] - boxes[:, 0]) *
             (boxes[:, 3] - boxes[:, 1]))[None].repeat(num_points, 1)
    ranges = regress_ranges[:, None, :].expand(num_points, num_gts, 2)
    gtb = boxes[None].expand(num_points, num_gts, 4)
    xs = points[:, 0, None].expand(num_points, num_gts)
    ys = points[:, 1, None].expand(num_points, num_gts)
    dist = torch.stack((xs - gtb[..., 0], ys - gtb[..., 1],
                        gtb[..., 2] - xs, gtb[..., 3] - ys), -1)
    if radii is None:
        inside = dist.min(-1)[0] > 0
    else:
        cx = (gtb[..., 0] + gtb[..., 2]) / 2
        cy = (gtb[..., 1] + gtb[..., 3]) / 2
        r = radii[:, None].expand(num_points, num_gts)
        x0 = torch.where(cx - r > gtb[..., 0], cx - r, gtb[..., 0])
        y0 = torch.where(cy - r > gtb[..., 1], cy - r, gtb[..., 1])
        x1 = torch.where(cx + r > gtb[..., 2], gtb[..., 2], cx + r)
        y1 = torch.where(cy + r > gtb[..., 3], gtb[..., 3], cy + r)
        inside = torch.stack((xs - x0, ys - y0, x1 - xs, y1 - ys),
                             -1).min(-1)[0] > 0
    reach = dist.max(-1)[0]
    in_range = (reach >= ranges[..., 0]) & (reach <= ranges[..., 1])
    areas[~inside] = INF
    areas[~in_range] = INF
    min_area, idx = areas.min(dim=1)
    out_labels = labels[idx]
    out_labels[min_area == INF] = num_classes
    return out_labels, dist[torch.arange(num_points), idx]


def _random_boxes(gen, num, size):
    xy = torch.randint(-8, size, (num, 2), generator=gen).float()
    wh = torch.randint(2, 160, (num, 2), generator=gen).float()
    return torch.cat([xy, xy + wh], 1)


@pytest.mark.parametrize('center_sampling', [False, True])
def test_batched_targets_equal_a_per_image_loop_bit_for_bit(center_sampling):
    gen = torch.Generator().manual_seed(0)
    head = make_head(num_classes=5, center_sampling=center_sampling)
    size = (160, 192)
    sizes = [(math.ceil(size[0] / s), math.ceil(size[1] / s))
             for s in STRIDES]
    points, valid, counts = head.get_priors(sizes, [{}] * 5, 'cpu')
    # random integer boxes (many exactly tied distances and areas),
    # duplicated boxes, fractional ones, and an image without boxes
    images = [_random_boxes(gen, 7, 150), _random_boxes(gen, 1, 150),
              torch.zeros((0, 4)), _random_boxes(gen, 3, 150)]
    dup = _random_boxes(gen, 2, 150)
    images.append(torch.cat([dup, dup, dup[:1] + 0.25]))
    instances = [InstanceData(bboxes=b, labels=torch.randint(
        0, 5, (len(b), ), generator=gen)) for b in images]
    per_point = torch.repeat_interleave(torch.arange(5), torch.tensor(
        counts))
    ranges = torch.tensor(head.regress_ranges, dtype=torch.float32)[
        per_point]
    radii = (torch.tensor([s * 1.5 for s in STRIDES])[per_point]
             if center_sampling else None)
    labels, dist = fcos_targets(points, ranges, radii, pad_gts(instances), 5)
    targets = head.get_targets(points, valid, pad_gts(instances), None,
                               counts)
    for i, inst in enumerate(instances):
        ref_labels, ref_dist = reference_targets(points, ranges, radii,
                                                 inst.bboxes, inst.labels, 5)
        assert torch.equal(labels[i], ref_labels), i
        assert torch.equal(dist[i], ref_dist), i
        assert torch.equal(targets['labels'][i], ref_labels)
    assert int(targets['pos_mask'].sum()) > 20
    assert not bool(targets['pos_mask'][2].any())
    assert torch.equal(targets['bbox_targets'][2], torch.zeros_like(dist[2]))
    # a batch without any box at all
    empty = pad_gts([gt([]), gt([])])
    labels, dist = fcos_targets(points, ranges, radii, empty, 5)
    assert bool((labels == 5).all()) and not bool(dist.any())


# ------------------------------------------------------------- the losses
def test_loss_values_of_one_positive_point_by_hand():
    # One level of stride 8 on a 16 x 16 input: points (4, 4), (12, 4),
    # (4, 12), (12, 12). The box [1, 2, 8, 8] (class 1) holds only (4, 4):
    # distances (3, 2, 4, 4), centerness sqrt(3/4 * 2/4).
    head = make_head(strides=[8], regress_ranges=[(-1, INF)])
    cls_scores = [torch.zeros(1, 2, 2, 2)]
    bbox_preds = [torch.full((1, 4, 2, 2), 7.)]
    bbox_preds[0][0, :, 0, 0] = torch.tensor([2., 2., 4., 4.])
    centernesses = [torch.ones(1, 1, 2, 2)]
    losses = head.loss_by_feat(cls_scores, bbox_preds, centernesses,
                               [gt([[1, 2, 8, 8]], [1])],
                               [dict(img_shape=(16, 16), pad_shape=(16,
                                                                    16))])
    eps = torch.finfo(torch.float32).eps
    # focal loss at logit 0 (p = 1/2): a negative element costs
    # 0.75 * p^2 * ln 2, the positive one 0.25 * (1 - p)^2 * ln 2; 7 + 1
    # elements over num_pos = 1
    focal = (7 * 0.75 * 0.25 + 0.25 * 0.25) * math.log(2)
    assert losses['loss_cls'].item() == pytest.approx(focal / (1 + eps),
                                                      rel=1e-6)
    # IoU of the predicted [2, 2, 8, 8] (36 px^2) inside the target
    # [1, 2, 8, 8] (42 px^2): 6/7; the centerness weight cancels against
    # the centerness sum in the denominator
    ct = math.sqrt(3 / 4 * 2 / 4)
    assert losses['loss_bbox'].item() == pytest.approx(
        ct * -math.log(6 / 7) / (ct + eps), rel=1e-6)
    # BCE of logit 1 against ct, over num_pos = 1
    bce = ct * math.log1p(math.exp(-1)) + (1 - ct) * math.log1p(math.e)
    assert losses['loss_centerness'].item() == pytest.approx(
        bce / (1 + eps), rel=1e-6)


def test_norm_on_bbox_targets_in_stride_units_and_predictions_in_pixels():
    instances = [gt([[0, 0, 100, 60], [30, 10, 230, 170]], [0, 1])]
    plain, points, levels = targets_of(make_head(), instances)
    normed, _, _ = targets_of(make_head(norm_on_bbox=True), instances)
    strides = torch.tensor(STRIDES, dtype=torch.float32)[levels]
    assert torch.equal(normed['pos_mask'], plain['pos_mask'])
    assert torch.equal(normed['bbox_targets'][0],
                       plain['bbox_targets'][0] / strides[:, None])
    # centerness is a ratio: the same in either unit
    pos = plain['pos_mask']
    assert torch.allclose(normed['centerness_targets'][pos],
                          plain['centerness_targets'][pos])
    # forward: max(x, 0) in stride units in training, times the stride in
    # eval; exp(x) without norm_on_bbox
    torch.manual_seed(0)
    head = make_head(norm_on_bbox=True)
    x = torch.randn(1, 8, 4, 4)
    scale = head.scales[2]
    raw = scale(head.conv_reg(head.reg_convs[0](x)))
    head.train()
    assert torch.equal(head.forward_single(x, scale, 32)[1],
                       raw.clamp(min=0))
    head.eval()
    assert torch.equal(head.forward_single(x, scale, 32)[1],
                       raw.clamp(min=0) * 32)
    head.norm_on_bbox = False
    assert torch.equal(head.forward_single(x, scale, 32)[1], raw.exp())


def test_all_background_and_mixed_batches_train_without_nan():
    torch.manual_seed(0)
    head = make_head()
    feats = [torch.randn(2, 8, 128 // s, 128 // s) for s in STRIDES]
    metas = [dict(img_shape=(128, 128), pad_shape=(128, 128))] * 2
    for instances in ([gt([]), gt([])],
                      [gt([]), gt([[10, 10, 50, 60]], [1])]):
        head.zero_grad()
        losses = head.loss_by_feat(*head(feats), instances, metas)
        total = sum(losses.values())
        total.backward()
        assert torch.isfinite(total)
        assert all(torch.isfinite(p.grad).all() for p in head.parameters()
                   if p.grad is not None)
    # one image had a box: its points give the box and centerness terms
    assert losses['loss_bbox'] > 0 and losses['loss_centerness'] > 0
    head.zero_grad()
    losses = head.loss_by_feat(*head(feats), [gt([]), gt([])], metas)
    assert losses['loss_bbox'].item() == 0
    assert losses['loss_centerness'].item() == 0
    assert losses['loss_cls'] > 0


def test_dcn_on_last_conv_is_refused():
    with pytest.raises(NotImplementedError, match='dcn_on_last_conv'):
        make_head(dcn_on_last_conv=True)
    with pytest.raises(ValueError, match='regress_ranges'):
        make_head(strides=[8, 16])


# ------------------------------------------------------------- prediction
def _outputs(head, cls_logits, centerness_logits):
    """One stride-8 level of 1 x 2 points, class 0 only."""
    cls_scores = [torch.tensor(cls_logits).reshape(1, 1, 1, 2)]
    bbox_preds = [torch.full((1, 4, 1, 2), 3.)]
    centernesses = [torch.tensor(centerness_logits).reshape(1, 1, 1, 2)]
    return cls_scores, bbox_preds, centernesses


def test_nms_pre_ranks_the_class_score_before_the_centerness():
    # Point 0 (4, 4): class score 0.9, centerness 0.1; point 1 (12, 4):
    # 0.8 and 0.9. With nms_pre = 1 the top-1 is taken on the class score
    # alone: point 0 survives, with 0.9 * 0.1 = 0.09. Ranking the products
    # (0.09 vs 0.72) first would keep point 1.
    head = make_head(num_classes=1, strides=[8], regress_ranges=[(-1, INF)])
    logit = lambda p: math.log(p / (1 - p))  # noqa: E731
    outs = _outputs(head, [logit(0.9), logit(0.8)], [logit(0.1),
                                                      logit(0.9)])
    meta = dict(img_shape=(8, 16), scale_factor=(1., 1.))
    cfg = ConfigDict(TEST_CFG, nms_pre=1)
    result, = head.predict_by_feat(*outs, batch_img_metas=[meta], cfg=cfg)
    assert result.bboxes.tolist() == [[1., 1., 7., 7.]]
    cls, ctr = torch.sigmoid(outs[0][0].flatten()), torch.sigmoid(
        outs[2][0].flatten())
    # the score is the plain product, no square root
    assert result.scores.tolist() == [(cls[0] * ctr[0]).item()]
    assert result.scores.item() != pytest.approx(
        math.sqrt(0.9 * 0.1), rel=1e-3)
    # with nms_pre = 2 both are kept, by descending product
    cfg.nms_pre = 2
    result, = head.predict_by_feat(*outs, batch_img_metas=[meta], cfg=cfg)
    assert result.scores.tolist() == pytest.approx([0.72, 0.09], rel=1e-6)
    assert result.bboxes[0].tolist() == [9., 1., 15., 7.]


def test_the_class_threshold_ignores_the_centerness():
    # 0.04 is below score_thr = 0.05 whatever its centerness; 0.06 passes
    # although 0.06 * 0.5 = 0.03 ends below it.
    head = make_head(num_classes=1, strides=[8], regress_ranges=[(-1, INF)])
    logit = lambda p: math.log(p / (1 - p))  # noqa: E731
    outs = _outputs(head, [logit(0.04), logit(0.06)], [10., 0.])
    meta = dict(img_shape=(8, 16), scale_factor=(1., 1.))
    result, = head.predict_by_feat(*outs, batch_img_metas=[meta])
    assert result.scores.tolist() == pytest.approx([0.03], rel=1e-6)


def test_bf16_outputs_decode_in_float32():
    torch.manual_seed(0)
    head = make_head(num_classes=3)
    sizes = [(16, 20), (8, 10), (4, 5), (2, 3), (1, 2)]
    cls = [torch.randn(1, 3, h, w) * 2 for h, w in sizes]
    box = [torch.rand(1, 4, h, w) * 300 + 200 for h, w in sizes]
    ctr = [torch.randn(1, 1, h, w) for h, w in sizes]
    meta = dict(img_shape=(1000, 1000), scale_factor=(1., 1.))
    low = [[t.bfloat16() for t in outs] for outs in (cls, box, ctr)]
    upcast = [[t.float() for t in outs] for outs in low]
    got, = head.predict_by_feat(*low, batch_img_metas=[meta])
    want, = head.predict_by_feat(*upcast, batch_img_metas=[meta])
    assert got.bboxes.dtype == torch.float32 and len(got) > 10
    assert torch.equal(got.bboxes, want.bboxes)
    assert torch.equal(got.scores, want.scores)


def test_normalisers_are_averaged_over_ranks(monkeypatch):
    # docs/fcos.md: 2 GPUs seeing 30 and 50 positives divide by 40. Here
    # this rank has 25 positives and reduce_mean stands in for the other
    # rank: it returns the mean of this rank's value and a fixed other one.
    import detkit.models.dense_heads.fcos_head as fcos_module
    seen = []

    def two_rank_mean(tensor):
        other = {0: 55., 1: 3.}[len(seen)]  # positives, centerness sum
        seen.append(tensor.item())
        return (tensor + other) / 2

    monkeypatch.setattr(fcos_module, 'reduce_mean', two_rank_mean)
    targets, _, _ = targets_of(make_head(), [gt([[0, 0, 40, 40]])])
    num_pos, ct_sum = seen
    assert num_pos == 25
    assert targets['avg_factor'] == (25 + 55) / 2
    assert ct_sum == pytest.approx(
        targets['centerness_targets'].sum().item(), rel=1e-6)
    assert targets['centerness_denorm'] == pytest.approx((ct_sum + 3) / 2,
                                                         rel=1e-6)
