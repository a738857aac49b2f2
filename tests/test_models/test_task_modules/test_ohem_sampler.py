"""OHEMSampler: the hardest candidates by the box head's classification
loss, with RandomSampler's counts, in ascending index; hand-made cases with
a context whose losses are known, neg_pos_ub, no candidates, ties, and
the batched sampler against mmdetection's per-image loop written out
plainly (with and without a batch-dependent BatchNorm in the RoI head)."""
import copy

import pytest
import torch
from mmengine.structures import InstanceData

from detkit.models.roi_heads import StandardRoIHead
from detkit.models.roi_heads.bbox_heads import BBoxHead
from detkit.models.task_modules.assigners.assign_result import AssignResult
from detkit.models.task_modules.samplers import OHEMSampler
from detkit.registry import TASK_UTILS
from detkit.structures import bbox2roi


class ScoreByX1(torch.nn.Module):
    """A context whose box head scores a RoI ``[0, 0, s]`` with ``s = x1 /
    10`` (two classes + background). The softmax cross-entropy of a
    foreground label is ``log(2 + e^s)`` (grows with x1: the hardest
    positives have the largest x1), that of the background label ``log(1 +
    2 e^-s)`` (the hardest negatives have the smallest x1)."""

    def __init__(self):
        super().__init__()
        self.bbox_head = BBoxHead(num_classes=2, in_channels=1,
                                  roi_feat_size=1, with_reg=False)
        self.calls = []

    def _bbox_forward(self, feats, rois):
        self.calls.append(rois.clone())
        s = rois[:, 1] / 10
        zeros = torch.zeros_like(s)
        return dict(cls_score=torch.stack([zeros, zeros, s], 1))


def batch(gt_inds, labels, x1):
    """A batched assignment over candidates whose boxes are ``[x1, 0, x1 +
    10, 10]``."""
    gt_inds = torch.tensor(gt_inds)
    x1 = torch.tensor(x1, dtype=torch.float32)
    priors = torch.stack([x1, torch.zeros_like(x1), x1 + 10,
                          torch.full_like(x1, 10.)], -1)
    assign = AssignResult(
        (gt_inds.amax(1).clamp(min=0)), gt_inds,
        torch.zeros(gt_inds.shape), torch.tensor(labels))
    return assign, priors


def indices(mask):
    return [row.nonzero(as_tuple=True)[0].tolist() for row in mask]


# image 0: three positives (x1 5, 1, 9), four negatives (x1 3, 7, 0, 8),
# one ignored candidate; image 1: one positive, five negatives, padding
GT_INDS = [[1, 2, 1, 0, 0, -1, 0, 0], [1, 0, 0, 0, 0, 0, -1, -1]]
LABELS = [[0, 1, 0, -1, -1, -1, -1, -1], [1, -1, -1, -1, -1, -1, -1, -1]]
X1 = [[5, 1, 9, 3, 7, 2, 0, 8], [4, 6, 2, 8, 1, 5, 0, 0]]


def test_keeps_the_hardest_positives_and_negatives_in_index_order():
    context = ScoreByX1()
    sampler = OHEMSampler(num=4, pos_fraction=0.5, context=context)
    assign, priors = batch(GT_INDS, LABELS, X1)
    pos, neg = sampler.sample_batch(assign, priors=priors, feats=())
    # image 0: 2 of 3 positives wanted -> the largest x1, 9 and 5 (indices
    # 2, 0); 4 - 2 = 2 negatives of 4 -> the smallest x1, 0 and 3 (6, 3)
    # image 1: its one positive; 3 of 5 negatives -> x1 1, 2, 5 (4, 2, 5)
    assert indices(pos) == [[0, 2], [0]]
    assert indices(neg) == [[3, 6], [2, 4, 5]]
    # one forward over every scored candidate: image 0's positives, its
    # negatives, image 1's negatives, each ascending; image 1's lone
    # positive needed no scoring
    call, = context.calls
    assert call[:, 0].tolist() == [0] * 7 + [1] * 5
    assert call[:, 1].tolist() == [5, 1, 9, 3, 7, 0, 8, 6, 2, 8, 1, 5]
    assert sampler.avg_factor(pos, neg) == (2 + 2) + (1 + 3)
    assert sampler.avg_factor_with_neg


def test_the_ranking_loss_is_the_box_heads_unreduced_cross_entropy():
    head = ScoreByX1().bbox_head
    s = torch.tensor([0.5, 0.9, 0.3])
    cls_score = torch.stack([torch.zeros(3), torch.zeros(3), s], 1)
    loss = head.loss(cls_score, None, None, torch.tensor([0, 1, 2]),
                     torch.ones(3), None, None,
                     reduction_override='none')['loss_cls']
    expected = torch.log(2 + torch.exp(s))
    expected[2] = torch.log(1 + 2 * torch.exp(-s[2]))
    assert torch.allclose(loss, expected, atol=1e-6)


def test_neg_pos_ub_caps_the_negatives():
    context = ScoreByX1()
    sampler = OHEMSampler(num=4, pos_fraction=0.5, context=context,
                          neg_pos_ub=0.5)
    assign, priors = batch(GT_INDS, LABELS, X1)
    pos, neg = sampler.sample_batch(assign, priors=priors, feats=())
    # image 0: 2 positives -> at most int(0.5 * 2) = 1 negative, the
    # hardest (x1 0); image 1: 1 positive -> int(0.5 * 1) = 0 negatives
    assert indices(pos) == [[0, 2], [0]]
    assert indices(neg) == [[6], []]


def test_few_candidates_are_all_taken_without_scoring():
    context = ScoreByX1()
    sampler = OHEMSampler(num=16, pos_fraction=0.25, context=context)
    assign, priors = batch(GT_INDS, LABELS, X1)
    pos, neg = sampler.sample_batch(assign)  # no priors / feats needed
    assert indices(pos) == [[0, 1, 2], [0]]
    assert indices(neg) == [[3, 4, 6, 7], [1, 2, 3, 4, 5]]
    assert context.calls == []


@pytest.mark.parametrize('gt_inds', [[[-1, -1, -1]], [[]]])
def test_no_candidates(gt_inds):
    context = ScoreByX1()
    sampler = OHEMSampler(num=4, pos_fraction=0.5, context=context)
    gt_inds = torch.tensor(gt_inds, dtype=torch.long).reshape(1, -1)
    assign = AssignResult(torch.tensor([0]), gt_inds,
                          torch.zeros(gt_inds.shape), gt_inds.clone())
    pos, neg = sampler.sample_batch(assign, priors=None, feats=None)
    assert pos.shape == neg.shape == gt_inds.shape
    assert not pos.any() and not neg.any()
    assert context.calls == []


def test_ties_break_as_torch_topk_on_the_images_own_losses():
    """Five negatives of equal loss, two wanted: the two that a plain 1-D
    ``topk(2)`` over that image's five losses returns."""
    context = ScoreByX1()
    sampler = OHEMSampler(num=2, pos_fraction=0.5, context=context)
    assign, priors = batch([[0, 0, 0, 0, 0]], [[-1] * 5], [[3] * 5])
    _, neg = sampler.sample_batch(assign, priors=priors, feats=())
    s = torch.full((5, ), 0.3)
    cls_score = torch.stack([torch.zeros(5), torch.zeros(5), s], 1)
    losses = context.bbox_head.loss(
        cls_score, None, None, torch.full((5, ), 2), torch.ones(5), None,
        None, reduction_override='none')['loss_cls']
    assert indices(neg) == [sorted(losses.topk(2).indices.tolist())]


def test_single_image_interface_and_errors():
    context = ScoreByX1()
    sampler = TASK_UTILS.build(
        dict(type='OHEMSampler', num=4, pos_fraction=0.5,
             add_gt_as_proposals=False), default_args=dict(context=context))
    assert isinstance(sampler, OHEMSampler) and sampler.loss_key == 'loss_cls'
    assign, priors = batch(GT_INDS, LABELS, X1)
    single = assign.for_image(0)
    res = sampler.sample(single, InstanceData(priors=priors[0]),
                         InstanceData(bboxes=priors[0, :2],
                                      labels=torch.tensor([0, 1])),
                         feats=())
    assert res.pos_inds.tolist() == [0, 2] and res.neg_inds.tolist() == [3, 6]
    assert res.avg_factor == 4
    with pytest.raises(ValueError, match='needs priors='):
        sampler.sample_batch(assign)
    bad_key = OHEMSampler(4, 0.5, context=context, loss_key='loss_iou')
    with pytest.raises(KeyError, match="'loss_iou'.*'loss_cls'"):
        bad_key.sample_batch(assign, priors=priors, feats=())
    with pytest.raises(ValueError, match=r'train_cfg.rcnn.sampler'):
        OHEMSampler(4, 0.5, context=torch.nn.Linear(1, 1))
    with pytest.raises(ValueError, match='context=NoneType'):
        TASK_UTILS.build(dict(type='OHEMSampler', num=4, pos_fraction=0.5))


# ------------------------------------------ batched == mmdetection's loop
NUM, POS_FRACTION = 16, 0.25


def make_head(shared_head=False):
    """A small R-CNN head with an OHEM sampler: FPN-style (four levels,
    two shared FCs) or C4-style (one level, a ResNet stage in training-mode
    BatchNorm, average pooling)."""
    channels = 64 if shared_head else 4
    train_cfg = dict(
        assigner=dict(type='MaxIoUAssigner', pos_iou_thr=0.5,
                      neg_iou_thr=0.5, min_pos_iou=0.5,
                      match_low_quality=False, ignore_iof_thr=-1),
        sampler=dict(type='OHEMSampler', num=NUM, pos_fraction=POS_FRACTION,
                     neg_pos_ub=-1, add_gt_as_proposals=True),
        pos_weight=-1)
    if shared_head:
        extras = dict(
            shared_head=dict(type='ResLayer', depth=18, stage=1, stride=2,
                             norm_eval=False),
            bbox_roi_extractor=dict(
                type='SingleRoIExtractor',
                roi_layer=dict(type='RoIAlign', output_size=14,
                               sampling_ratio=0),
                out_channels=channels, featmap_strides=[8]),
            bbox_head=dict(type='BBoxHead', with_avg_pool=True,
                           roi_feat_size=7, in_channels=128, num_classes=3))
    else:
        extras = dict(
            bbox_roi_extractor=dict(
                type='SingleRoIExtractor',
                roi_layer=dict(type='RoIAlign', output_size=7,
                               sampling_ratio=0),
                out_channels=channels, featmap_strides=[4, 8, 16, 32]),
            bbox_head=dict(type='Shared2FCBBoxHead', in_channels=channels,
                           fc_out_channels=16, roi_feat_size=7,
                           num_classes=3))
    head = StandardRoIHead(train_cfg=train_cfg, **extras)
    head.init_weights()
    return head


def scene(seed=0):
    """Three 128x128 images: two with ground truths and many overlapping
    proposals (more positives than the 4 wanted), one without ground
    truth (negatives only); 12 to 60 proposals each."""
    g = torch.Generator().manual_seed(seed)
    gts = [torch.tensor([[10., 12., 60., 70.], [64., 20., 120., 90.]]),
           torch.tensor([[30., 30., 100., 110.]]),
           torch.zeros(0, 4)]
    proposals = []
    for gt, num in zip(gts, (60, 40, 30)):
        jittered = (gt.repeat(6, 1) + torch.randn(6 * len(gt), 4,
                                                  generator=g) * 3)
        xy = torch.rand(num, 2, generator=g) * 100
        wh = torch.rand(num, 2, generator=g) * 40 + 8
        boxes = torch.cat([jittered, torch.cat([xy, xy + wh], 1)])
        proposals.append(InstanceData(bboxes=boxes.clamp(0, 128)))
    gt_instances = [
        InstanceData(bboxes=gt, labels=torch.arange(len(gt)) % 3)
        for gt in gts
    ]
    return proposals, gt_instances


def mmdet_loop(head, proposals, gt_instances, feats):
    """mmdetection's OHEM, image by image: assign, put the ground truths in
    front, score too many positives (then negatives) with the image's own
    features, keep ``topk``, sort (``unique``). Per image ``(pos, neg,
    candidates)``, and the sizes of the scored groups in order."""
    results, scored = [], []
    for i, (props, gt) in enumerate(zip(proposals, gt_instances)):
        assign = head.bbox_assigner.assign(InstanceData(priors=props.bboxes),
                                           gt)
        priors = props.bboxes
        if len(gt.bboxes):
            priors = torch.cat([gt.bboxes, priors])
            assign.add_gt_(gt.labels)
        img_feats = [level[i][None] for level in feats]

        def hardest(inds, num_expected, labels):
            scored.append(inds.numel())
            with torch.no_grad():
                rois = bbox2roi([priors[inds]])
                cls_score = head._bbox_forward(img_feats, rois)['cls_score']
                loss = head.bbox_head.loss(
                    cls_score, None, rois, labels,
                    cls_score.new_ones(cls_score.size(0)), None, None,
                    reduction_override='none')['loss_cls']
            return inds[loss.topk(num_expected).indices]

        pos = torch.nonzero(assign.gt_inds > 0).squeeze(1)
        num_expected = int(NUM * POS_FRACTION)
        if pos.numel() > num_expected:
            pos = hardest(pos, num_expected, assign.labels[pos])
        pos = pos.unique()
        num_expected = NUM - pos.numel()
        neg = torch.nonzero(assign.gt_inds == 0).squeeze(1)
        if neg.numel() > num_expected:
            neg = hardest(neg, num_expected, neg.new_full(
                neg.shape, head.bbox_head.num_classes))
        results.append((pos, neg.unique(), priors))
    return results, scored


def counting_forwards(head):
    calls = []
    forward = head._bbox_forward

    def counted(feats, rois):
        calls.append(len(rois))
        return forward(feats, rois)

    head._bbox_forward = counted
    return calls


@pytest.mark.parametrize('shared_head', [False, True],
                         ids=['fpn', 'c4_train_mode_bn'])
def test_batched_sampling_equals_mmdetections_per_image_loop(shared_head):
    torch.manual_seed(0)
    head = make_head(shared_head)
    reference_head = copy.deepcopy(head)
    channels = 64 if shared_head else 4
    feats = tuple(torch.randn(3, channels, 128 // s, 128 // s)
                  for s in (4, 8, 16, 32))
    if shared_head:
        feats = feats[1:2]  # one stride-8 level
    proposals, gt_instances = scene()
    calls = counting_forwards(head)
    batch_result = head.sample(proposals, gt_instances, feats=feats)
    expected, scored = mmdet_loop(reference_head, proposals, gt_instances,
                                  feats)
    # every group needed mining: both kinds in images 0 and 1, the
    # negatives of image 2 (no ground truth, so no positive)
    assert len(scored) == 5
    rois = batch_result.rois()
    for img, (pos, neg, priors) in enumerate(expected):
        res = batch_result[img]
        assert torch.equal(res.pos_inds, pos), img
        assert torch.equal(res.neg_inds, neg), img
        # int(16 * 0.25) = 4 positives, then 16 - #pos negatives
        assert (len(pos), len(neg)) == ((4, 12) if img < 2 else (0, 16))
        # RoI order: the image's positives then its negatives, ascending
        assert torch.equal(rois[rois[:, 0] == img, 1:],
                           priors[torch.cat([pos, neg])]), img
    if shared_head:
        # BatchNorm in training mode: scored group by group, as
        # mmdetection does, so its running statistics match too
        assert calls == scored
        for ours, theirs in zip(head.shared_head.modules(),
                                reference_head.shared_head.modules()):
            if isinstance(ours, torch.nn.BatchNorm2d):
                assert torch.equal(ours.running_mean, theirs.running_mean)
                assert int(ours.num_batches_tracked) == 5
    else:
        assert calls == [sum(scored)]  # one forward for the whole batch
