"""ATSSHead: a hand-made case end to end (adaptive threshold, centerness
target, the three losses and their normalisers), batched targets equal a
per-image loop that removes invalid anchors as mmdetection does, empty
images and low-precision outputs."""
import math
import statistics

import pytest
import torch
from mmengine.structures import InstanceData

from detkit.models.dense_heads import ATSSHead
from detkit.models.dense_heads.fcos_head import centerness_target
from detkit.models.utils import pad_gts

TEST_CFG = dict(nms_pre=1000, min_bbox_size=0, score_thr=0.05,
                nms=dict(type='nms', iou_threshold=0.6), max_per_img=100)


def make_head(strides=(8, ), octave_base_scale=2, topk=9, num_classes=2):
    return ATSSHead(
        num_classes=num_classes, in_channels=8, feat_channels=8,
        stacked_convs=1,
        norm_cfg=dict(type='GN', num_groups=2, requires_grad=True),
        anchor_generator=dict(type='AnchorGenerator', ratios=[1.0],
                              octave_base_scale=octave_base_scale,
                              scales_per_octave=1, strides=list(strides)),
        bbox_coder=dict(type='DeltaXYWHBBoxCoder',
                        target_means=[.0, .0, .0, .0],
                        target_stds=[0.1, 0.1, 0.2, 0.2]),
        loss_cls=dict(type='FocalLoss', use_sigmoid=True, gamma=2.0,
                      alpha=0.25, loss_weight=1.0),
        loss_bbox=dict(type='GIoULoss', loss_weight=2.0),
        train_cfg=dict(assigner=dict(type='ATSSAssigner', topk=topk),
                       allowed_border=-1, pos_weight=-1, debug=False),
        test_cfg=TEST_CFG)


def gt(boxes, labels=None):
    boxes = torch.tensor(boxes, dtype=torch.float32).reshape(-1, 4)
    labels = [0] * len(boxes) if labels is None else labels
    return InstanceData(bboxes=boxes, labels=torch.tensor(labels).long())


def iou(a, b):
    w = max(0., min(a[2], b[2]) - max(a[0], b[0]))
    h = max(0., min(a[3], b[3]) - max(a[1], b[1]))
    area = lambda r: (r[2] - r[0]) * (r[3] - r[1])  # noqa: E731
    return w * h / (area(a) + area(b) - w * h)


# A 16 x 16 input, one level of stride 8: four 16 px anchors centred on
# (0, 0), (8, 0), (0, 8), (8, 8). The ground truth [-8, -6, 8, 8] (class 1)
# is centred on (0, 1).
ANCHORS = [[-8, -8, 8, 8], [0, -8, 16, 8], [-8, 0, 8, 16], [0, 0, 16, 16]]
BOX = [-8., -6., 8., 8.]
META = dict(img_shape=(16, 16), pad_shape=(16, 16))


def test_hand_made_case_end_to_end():
    head = make_head()
    anchors, valid, counts = head.get_priors([(2, 2)], [META], 'cpu')
    assert anchors.tolist() == ANCHORS and counts == [4]
    # all 4 anchors are candidates (topk 9 > 4); threshold mean + std of
    # their IoUs (0.875, 0.3043, 0.3636, 0.1538): only the first passes,
    # and its centre (0, 0) lies inside the box
    ious = [iou(a, BOX) for a in ANCHORS]
    assert ious[0] == 0.875
    thr = statistics.mean(ious) + statistics.stdev(ious)
    assert thr == pytest.approx(0.737441, abs=1e-6)
    assert [v >= thr for v in ious] == [True, False, False, False]
    targets = head.get_targets(anchors, valid, pad_gts([gt([BOX], [1])]),
                               [META], counts)
    assert targets['pos_mask'].tolist() == [[True, False, False, False]]
    assert targets['labels'].tolist() == [[1, 2, 2, 2]]
    assert targets['label_weights'].tolist() == [[1., 1., 1., 1.]]
    assert targets['bbox_targets'][0, 0].tolist() == BOX  # the box itself
    # centerness from the anchor centre (0, 0): (l, t, r, b) = (8, 6, 8, 8)
    ct = math.sqrt(8 / 8 * 6 / 8)
    assert targets['centerness_targets'][0].tolist() == pytest.approx(
        [ct, 0, 0, 0], rel=1e-7)
    assert targets['avg_factor'] == 1.0
    assert targets['bbox_avg_factor'] == 1.0  # max(0.866, 1)

    # losses: logits 0, deltas 0 (decoded box = the anchor)
    losses = head.loss_by_feat([torch.zeros(1, 2, 2, 2)],
                               [torch.zeros(1, 4, 2, 2)],
                               [torch.zeros(1, 1, 2, 2)],
                               [gt([BOX], [1])], [META])
    eps = torch.finfo(torch.float32).eps
    focal = (7 * 0.75 * 0.25 + 0.25 * 0.25) * math.log(2)
    assert losses['loss_cls'].item() == pytest.approx(focal / (1 + eps),
                                                      rel=1e-6)
    # GIoU of the anchor [-8, -8, 8, 8] and the box: IoU 0.875, the
    # enclosing box is the anchor = the union: GIoU 0.875; loss weight 2,
    # centerness weight ct, avg_factor 1 (+ eps), bbox_avg_factor 1
    assert losses['loss_bbox'].item() == pytest.approx(
        2 * ct * (1 - 0.875) / (1 + eps), rel=1e-6)
    assert losses['loss_centerness'].item() == pytest.approx(
        math.log(2) / (1 + eps), rel=1e-6)
    # a second image without boxes adds max(0, 1) to avg_factor: the class
    # loss (8 more negatives) and the centerness loss are divided by 2
    losses = head.loss_by_feat([torch.zeros(2, 2, 2, 2)],
                               [torch.zeros(2, 4, 2, 2)],
                               [torch.zeros(2, 1, 2, 2)],
                               [gt([BOX], [1]), gt([])], [META, META])
    assert losses['loss_cls'].item() == pytest.approx(
        (focal + 8 * 0.75 * 0.25 * math.log(2)) / (2 + eps), rel=1e-6)
    assert losses['loss_centerness'].item() == pytest.approx(
        math.log(2) / (2 + eps), rel=1e-6)
    assert losses['loss_bbox'].item() == pytest.approx(
        2 * ct * (1 - 0.875) / (1 + eps), rel=1e-6)


def test_bbox_avg_factor_is_the_centerness_sum_when_above_one():
    # Two boxes, each matched by the anchor it equals: centerness 1 each,
    # so the box loss is divided by 2.
    head = make_head()
    anchors, valid, counts = head.get_priors([(2, 2)], [META], 'cpu')
    targets = head.get_targets(
        anchors, valid, pad_gts([gt([ANCHORS[0], ANCHORS[3]], [0, 1])]),
        [META], counts)
    assert targets['pos_mask'].tolist() == [[True, False, False, True]]
    assert targets['bbox_avg_factor'] == 2.0
    assert targets['avg_factor'] == 2.0


def test_docs_example_centerness_of_an_anchor():
    # docs/atss.md: centre (48, 24) and [0, 0, 100, 60]: (48, 24, 52, 36)
    assert centerness_target(torch.tensor([48., 24., 52., 36.])).item() == \
        pytest.approx(math.sqrt(48 / 52 * 24 / 36), rel=1e-6)
    assert math.sqrt(48 / 52 * 24 / 36) == pytest.approx(0.784465, abs=1e-6)


# ------------------------------------------------ batch = per-image loop
def reference_targets(head, anchors, valid, counts, instances):
    """mmdetection's per-image targets: drop the image's invalid anchors,
    assign the rest with their per-level counts, map back."""
    out = []
    num_classes = head.num_classes
    level_of = torch.repeat_interleave(torch.arange(len(counts)),
                                       torch.tensor(counts))
    for flags, inst in zip(valid, instances):
        kept = anchors[flags]
        kept_counts = [int((flags & (level_of == lvl)).sum())
                       for lvl in range(len(counts))]
        result = head.assigner.assign(InstanceData(priors=kept), kept_counts,
                                      inst)
        inds = result.gt_inds
        labels = torch.full((len(anchors), ), num_classes, dtype=torch.long)
        weights = torch.zeros(len(anchors))
        boxes = torch.zeros((len(anchors), 4))
        ct = torch.zeros(len(anchors))
        pos = inds > 0
        where = flags.nonzero()[:, 0]
        labels[where[pos]] = inst.labels[inds[pos] - 1]
        weights[where[inds >= 0]] = 1.
        boxes[where[pos]] = inst.bboxes[inds[pos] - 1]
        a, b = kept[pos], inst.bboxes[inds[pos] - 1]
        cx, cy = (a[:, 2] + a[:, 0]) / 2, (a[:, 3] + a[:, 1]) / 2
        ct[where[pos]] = centerness_target(torch.stack(
            [cx - b[:, 0], cy - b[:, 1], b[:, 2] - cx, b[:, 3] - cy], -1))
        out.append((labels, weights, boxes, ct))
    return out


def test_batched_targets_equal_a_per_image_loop():
    gen = torch.Generator().manual_seed(0)
    head = make_head(strides=(8, 16), topk=3, num_classes=4)
    # A 64 x 96 batch: the second image is padded only to 64 x 48, so its
    # anchors beyond x = 48 are removed before assignment.
    metas = [dict(img_shape=(60, 90), pad_shape=(64, 96)),
             dict(img_shape=(60, 40), pad_shape=(64, 48)),
             dict(img_shape=(64, 96), pad_shape=(64, 96)),
             dict(img_shape=(50, 40), pad_shape=(64, 48))]
    instances = []
    for num, width in ((5, 90), (2, 40), (0, 90), (3, 40)):
        xy = torch.rand(num, 2, generator=gen) * torch.tensor([width - 10,
                                                               50.])
        wh = torch.rand(num, 2, generator=gen) * 30 + 6
        instances.append(InstanceData(
            bboxes=torch.cat([xy, xy + wh], 1),
            labels=torch.randint(0, 4, (num, ), generator=gen)))
    anchors, valid, counts = head.get_priors([(8, 12), (4, 6)], metas,
                                             'cpu')
    assert not bool(valid[1].all()) and bool(valid[0].all())
    targets = head.get_targets(anchors, valid, pad_gts(instances), metas,
                               counts)
    refs = reference_targets(head, anchors, valid, counts, instances)
    for i, (labels, weights, boxes, ct) in enumerate(refs):
        assert torch.equal(targets['labels'][i], labels), i
        assert torch.equal(targets['label_weights'][i], weights), i
        assert torch.equal(targets['bbox_targets'][i], boxes), i
        assert torch.equal(targets['centerness_targets'][i], ct), i
    num_pos = targets['pos_mask'].sum(1)
    assert num_pos[2] == 0 and bool((num_pos[[0, 1, 3]] > 0).all())
    assert targets['avg_factor'] == float(num_pos.clamp(min=1).sum())
    # removed anchors take no part in the classification loss
    assert not bool(targets['label_weights'][1][~valid[1]].any())


def test_all_background_and_mixed_batches_train_without_nan():
    torch.manual_seed(0)
    head = make_head(strides=(8, 16))
    feats = [torch.randn(2, 8, 8, 8), torch.randn(2, 8, 4, 4)]
    metas = [dict(img_shape=(64, 64), pad_shape=(64, 64))] * 2
    for instances in ([gt([]), gt([])],
                      [gt([]), gt([[10, 10, 40, 50]], [1])]):
        head.zero_grad()
        losses = head.loss_by_feat(*head(feats), instances, metas)
        total = sum(losses.values())
        total.backward()
        assert torch.isfinite(total)
        assert all(torch.isfinite(p.grad).all() for p in head.parameters()
                   if p.grad is not None)
    assert losses['loss_bbox'] > 0 and losses['loss_centerness'] > 0
    losses = head.loss_by_feat(*head(feats), [gt([]), gt([])], metas)
    assert losses['loss_bbox'].item() == 0
    assert losses['loss_centerness'].item() == 0


def test_bf16_outputs_decode_in_float32():
    torch.manual_seed(0)
    head = make_head(strides=(8, 16), octave_base_scale=8, num_classes=3)
    sizes = [(16, 16), (8, 8)]
    cls = [torch.randn(1, 3, h, w) * 2 for h, w in sizes]
    box = [torch.randn(1, 4, h, w) for h, w in sizes]
    ctr = [torch.randn(1, 1, h, w) for h, w in sizes]
    meta = dict(img_shape=(128, 128), scale_factor=(1., 1.))
    low = [[t.bfloat16() for t in outs] for outs in (cls, box, ctr)]
    upcast = [[t.float() for t in outs] for outs in low]
    got, = head.predict_by_feat(*low, batch_img_metas=[meta])
    want, = head.predict_by_feat(*upcast, batch_img_metas=[meta])
    assert got.bboxes.dtype == torch.float32 and len(got) > 0
    assert torch.equal(got.bboxes, want.bboxes)
    assert torch.equal(got.scores, want.scores)


def test_normalisers_are_averaged_over_ranks(monkeypatch):
    # reduce_mean stands in for a second rank: avg_factor and the
    # centerness sum are averaged with that rank's 5 and 3.4
    import detkit.models.dense_heads.atss_head as atss_module
    others = iter([5., 3.4])
    monkeypatch.setattr(atss_module, 'reduce_mean',
                        lambda t: (t + next(others)) / 2)
    head = make_head()
    anchors, valid, counts = head.get_priors([(2, 2)], [META], 'cpu')
    targets = head.get_targets(anchors, valid, pad_gts([gt([BOX], [1])]),
                               [META], counts)
    ct = math.sqrt(8 / 8 * 6 / 8)
    assert targets['avg_factor'] == (1 + 5) / 2
    assert targets['bbox_avg_factor'] == pytest.approx((ct + 3.4) / 2,
                                                       rel=1e-6)
