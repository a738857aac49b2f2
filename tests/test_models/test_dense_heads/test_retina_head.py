"""RetinaHead: parameter names, init, batched targets/losses, decoding."""
import math

import pytest
import torch
from conftest import read_compat
from mmengine.structures import InstanceData

from detkit.models.dense_heads import RetinaHead
from detkit.models.utils import pad_gts
from detkit.structures import DetDataSample

NUM_CLASSES = 3
TRAIN_CFG = dict(
    assigner=dict(
        type='MaxIoUAssigner',
        pos_iou_thr=0.5,
        neg_iou_thr=0.4,
        min_pos_iou=0,
        ignore_iof_thr=-1),
    sampler=dict(type='PseudoSampler'),
    allowed_border=-1,
    pos_weight=-1)
TEST_CFG = dict(
    nms_pre=1000,
    min_bbox_size=0,
    score_thr=0.05,
    nms=dict(type='nms', iou_threshold=0.5),
    max_per_img=100)
FOCAL = dict(
    type='FocalLoss', use_sigmoid=True, gamma=2.0, alpha=0.25,
    loss_weight=1.0)


def make_head(num_classes=NUM_CLASSES, in_channels=8, stacked_convs=0):
    return RetinaHead(
        num_classes=num_classes,
        in_channels=in_channels,
        stacked_convs=stacked_convs,
        feat_channels=in_channels,
        loss_cls=FOCAL,
        loss_bbox=dict(type='L1Loss', loss_weight=1.0),
        train_cfg=TRAIN_CFG,
        test_cfg=TEST_CFG)


def feats_for(input_hw, channels=8, batch=1, fill=0.0):
    """P3-P7 feature maps of a (H, W) input, strides 8..128 (ceil)."""
    h, w = input_hw
    sizes = []
    for stride in (8, 16, 32, 64, 128):
        sizes.append((math.ceil(h / stride), math.ceil(w / stride)))
    return [torch.full((batch, channels, fh, fw), fill) for fh, fw in sizes]


def sample(img_shape, pad_shape=None, boxes=(), labels=(), scale=(1., 1.)):
    ds = DetDataSample(
        metainfo=dict(
            img_shape=img_shape,
            ori_shape=img_shape,
            pad_shape=pad_shape or img_shape,
            batch_input_shape=pad_shape or img_shape,
            scale_factor=scale))
    ds.gt_instances = InstanceData(
        bboxes=torch.tensor(boxes, dtype=torch.float32).reshape(-1, 4),
        labels=torch.tensor(labels, dtype=torch.long))
    return ds


def zero_head():
    head = make_head()
    for p in head.parameters():
        torch.nn.init.zeros_(p)
    return head


def test_parameter_names_match_mmdetection_checkpoint():
    expected = {
        k[len('bbox_head.'):]: v
        for k, v in read_compat('retinanet_r50_fpn').items()
        if k.startswith('bbox_head.')
    }
    head = RetinaHead(num_classes=80, in_channels=256)
    got = {
        k: (tuple(v.shape), str(v.dtype).replace('torch.', ''))
        for k, v in head.state_dict().items()
    }
    assert got == expected


def test_classification_bias_starts_at_prior_probability():
    head = RetinaHead(num_classes=80, in_channels=16, feat_channels=16)
    head.init_weights()
    expected = -math.log((1 - 0.01) / 0.01)  # -4.59512
    assert torch.allclose(head.retina_cls.bias,
                          torch.full((720, ), expected), atol=1e-6)
    assert head.retina_reg.bias.abs().max() == 0
    # 9 anchors x 80 classes, anchor-major channels
    assert head.retina_cls.out_channels == 9 * 80


def test_all_background_loss_equals_closed_form():
    """No ground truth: every valid anchor is a negative; with constant
    logits b the focal loss per (anchor, class) is
    (1 - alpha) * sigmoid(b)^2 * log(1 + e^b), divided by avg_factor = B."""
    head = zero_head()
    b = -2.0
    head.retina_cls.bias.data.fill_(b)
    feats = feats_for((64, 96), batch=2)
    # image 1 is padded: only 40x64 of the 64x96 input is real
    samples = [sample((64, 96)), sample((40, 64), pad_shape=(40, 64))]
    losses = head.loss(feats, samples)

    def valid_anchors(pad_h, pad_w):
        total = 0
        for f, stride in zip(feats, (8, 16, 32, 64, 128)):
            fh, fw = f.shape[-2:]
            vh = min(math.ceil(pad_h / stride), fh)
            vw = min(math.ceil(pad_w / stride), fw)
            total += vh * vw * 9
        return total

    n_valid = valid_anchors(64, 96) + valid_anchors(40, 64)
    p = 1 / (1 + math.exp(-b))
    per_elem = 0.75 * p**2 * math.log(1 + math.exp(b))
    expected = n_valid * NUM_CLASSES * per_elem / (2 + 1.1920929e-07)
    assert losses['loss_cls'].item() == pytest.approx(expected, rel=1e-5)
    assert losses['loss_bbox'].item() == 0.0


def test_batched_loss_equals_per_image_losses():
    torch.manual_seed(0)
    head = make_head(stacked_convs=1)
    head.init_weights()
    feats = [f + torch.randn_like(f) for f in feats_for((96, 128), batch=2)]
    samples = [
        sample((96, 128),
               boxes=[[10, 12, 50, 60], [60, 20, 120, 90]],
               labels=[0, 2]),
        sample((80, 100), pad_shape=(96, 128), boxes=[[5, 5, 30, 25]],
               labels=[1]),
    ]
    batched = head.loss(feats, samples)
    # avg_factor per image = max(#pos, 1): recover each image's share.
    per_image = []
    for i in range(2):
        one = head.loss([f[i:i + 1] for f in feats], [samples[i]])
        targets = head.get_targets(
            *head.get_anchors([f.shape[-2:] for f in feats],
                              [samples[i].metainfo], feats[0].device),
            pad_gts([samples[i].gt_instances]))
        per_image.append((one, float(targets['avg_factor'])))
    eps = 1.1920929e-07
    total_avg = sum(a for _, a in per_image)
    for key in ('loss_cls', 'loss_bbox'):
        summed = sum(l[key].item() * (a + eps) for l, a in per_image)
        assert batched[key].item() == pytest.approx(
            summed / (total_avg + eps), rel=1e-4)
    assert batched['loss_bbox'].item() > 0


def test_positive_anchor_targets_and_zero_regression_loss_for_exact_match():
    """A GT equal to one anchor: that anchor is positive with target 0."""
    head = zero_head()
    feats = feats_for((64, 64))
    anchors, valid = head.get_anchors([f.shape[-2:] for f in feats],
                                      [sample((64, 64)).metainfo], 'cpu')
    # level 0, location (y=2, x=3), anchor 4 (ratio 1, scale 2^(1/3) * 4)
    idx = (2 * 8 + 3) * 9 + 4
    gt = anchors[idx].tolist()
    targets = head.get_targets(anchors, valid,
                               pad_gts([sample((64, 64), boxes=[gt],
                                               labels=[1]).gt_instances]))
    assert targets['labels'][0, idx] == 1
    assert targets['pos_mask'][0, idx]
    assert targets['bbox_targets'][0, idx].abs().max() == 0
    assert targets['bbox_weights'][0, idx].tolist() == [1, 1, 1, 1]
    num_pos = int(targets['pos_mask'].sum())
    assert targets['avg_factor'] == num_pos
    # every positive has IoU >= 0.5 with the GT or is its best anchor
    from detkit.structures import bbox_overlaps
    ious = bbox_overlaps(anchors[targets['pos_mask'][0]],
                         torch.tensor([gt]))[:, 0]
    assert ious.min() >= 0.5


def test_predict_decodes_the_single_confident_anchor():
    """Only one (location, anchor, class) scores high; with zero deltas
    the detection is that anchor, clipped and mapped back by 1/scale."""
    head = zero_head()
    c, a, (y0, x0) = 2, 4, (3, 5)
    head.retina_cls.bias.data.fill_(-5.0)
    head.retina_cls.weight.data[a * NUM_CLASSES + c, 0, 1, 1] = 10.0
    feats = feats_for((64, 96), batch=1)
    feats[0][0, 0, y0, x0] = 1.0
    scale = (0.5, 0.25)
    meta_sample = sample((64, 96), scale=scale)
    results = head.predict(feats, [meta_sample], rescale=True)[0]
    assert len(results) == 1
    assert results.labels.tolist() == [c]
    assert results.scores.item() == pytest.approx(
        1 / (1 + math.exp(-5.0)), rel=1e-6)
    base = head.prior_generator.base_anchors[0][a]
    anchor = base + torch.tensor([x0 * 8., y0 * 8., x0 * 8., y0 * 8.])
    anchor[0::2] = anchor[0::2].clamp(0, 96)
    anchor[1::2] = anchor[1::2].clamp(0, 64)
    expected = anchor * torch.tensor(
        [1 / scale[0], 1 / scale[1], 1 / scale[0], 1 / scale[1]])
    assert torch.allclose(results.bboxes[0], expected, atol=1e-4)


def test_predict_batch_with_an_empty_image():
    head = zero_head()
    head.retina_cls.bias.data.fill_(-5.0)  # every score 0.0067 < 0.05
    feats = feats_for((64, 64), batch=2)
    results = head.predict(feats, [sample((64, 64)), sample((50, 60))])
    assert [len(r) for r in results] == [0, 0]
    assert results[0].bboxes.shape == (0, 4)
