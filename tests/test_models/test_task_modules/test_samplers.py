"""PseudoSampler / RandomSampler / SamplingResult (docs/sampling.md)."""
import pytest
import torch
from mmengine.structures import InstanceData

from detkit.models.task_modules.assigners import AssignResult
from detkit.models.task_modules.samplers import (BatchSamplingResult,
                                                 PseudoSampler, RandomSampler,
                                                 SamplingResult, prepend_gts)
from detkit.registry import TASK_UTILS


def make_assign(gt_inds, gt_labels=None):
    gt_inds = torch.as_tensor(gt_inds)
    if gt_labels is None:
        labels = torch.where(gt_inds > 0, gt_inds * 10, -1)
    else:
        labels = torch.where(gt_inds > 0,
                             gt_labels[(gt_inds - 1).clamp(min=0)], -1)
    num_gts = int(gt_inds.max().clamp(min=0)) if gt_inds.dim() == 1 else \
        gt_inds.amax(-1).clamp(min=0)
    return AssignResult(num_gts, gt_inds, gt_inds.float() / 10, labels)


def random_gt_inds(num_imgs, num, num_pos, num_ignore, seed):
    """``(B, N)`` with ``num_pos[i]`` positives (GT 1..3), ``num_ignore``
    ignored, the rest negative, shuffled."""
    g = torch.Generator().manual_seed(seed)
    rows = []
    for i in range(num_imgs):
        row = torch.zeros(num, dtype=torch.long)
        row[:num_pos[i]] = torch.randint(1, 4, (num_pos[i], ), generator=g)
        row[num_pos[i]:num_pos[i] + num_ignore] = -1
        rows.append(row[torch.randperm(num, generator=g)])
    return torch.stack(rows)


def mmdet_order_draws(gt_inds, num, pos_fraction, neg_pos_ub=-1):
    """The masks mmdetection's per-image RandomSampler draws, written out:
    per image, randperm for positives only if oversubscribed, then for
    negatives; candidates in ascending index order; result sorted."""
    pos_out, neg_out = [], []
    expected_pos = int(num * pos_fraction)
    for row in gt_inds:
        pos = (row > 0).nonzero().squeeze(1)
        if pos.numel() > expected_pos:
            pos = pos[torch.randperm(pos.numel())[:expected_pos]].unique()
        expected_neg = num - pos.numel()
        if neg_pos_ub >= 0:
            expected_neg = min(expected_neg,
                               int(neg_pos_ub * max(1, pos.numel())))
        neg = (row == 0).nonzero().squeeze(1)
        if neg.numel() > expected_neg:
            neg = neg[torch.randperm(neg.numel())[:expected_neg]].unique()
        pos_mask = torch.zeros_like(row, dtype=torch.bool)
        neg_mask = torch.zeros_like(row, dtype=torch.bool)
        pos_mask[pos], neg_mask[neg] = True, True
        pos_out.append(pos_mask)
        neg_out.append(neg_mask)
    return torch.stack(pos_out), torch.stack(neg_out)


# ---------------------------------------------------------------- Pseudo
def test_pseudo_sample_single_image():
    priors = torch.arange(24, dtype=torch.float32).view(6, 4)
    gt_bboxes = torch.tensor([[0., 0., 5., 5.], [10., 10., 20., 20.]])
    gt_labels = torch.tensor([3, 8])
    assign = make_assign([0, 2, -1, 1, 0, 2], gt_labels)
    result = TASK_UTILS.build(dict(type='PseudoSampler')).sample(
        assign, InstanceData(priors=priors),
        InstanceData(bboxes=gt_bboxes, labels=gt_labels))
    assert result.pos_inds.tolist() == [1, 3, 5]
    assert result.neg_inds.tolist() == [0, 4]
    assert result.pos_assigned_gt_inds.tolist() == [1, 0, 1]
    assert result.pos_gt_labels.tolist() == [8, 3, 8]
    assert torch.equal(result.pos_gt_bboxes, gt_bboxes[[1, 0, 1]])
    assert torch.equal(result.priors, priors[[1, 3, 5, 0, 4]])
    assert result.pos_is_gt.tolist() == [0, 0, 0]
    assert (result.num_pos, result.num_neg) == (3, 2)
    assert result.avg_factor == 3 and not result.avg_factor_with_neg


def test_pseudo_batch_masks_and_avg_factor():
    gt_inds = torch.tensor([[0, 1, -1, 2], [0, 0, -1, 0], [-1, -1, -1, -1]])
    sampler = PseudoSampler()
    pos, neg = sampler.sample_batch(make_assign(gt_inds))
    assert pos.tolist() == [[False, True, False, True], [False] * 4,
                            [False] * 4]
    assert neg.tolist() == [[True, False, False, False],
                            [True, True, False, True], [False] * 4]
    # max(2, 1) + max(0, 1) + max(0, 1)
    assert sampler.avg_factor(pos, neg) == 4.0


# ---------------------------------------------------------------- Random
def test_random_counts_and_fraction():
    sampler = RandomSampler(num=256, pos_fraction=0.5,
                            add_gt_as_proposals=False)
    gt_inds = random_gt_inds(3, 2000, [300, 20, 0], num_ignore=100, seed=0)
    pos, neg = sampler.sample_batch(make_assign(gt_inds))
    assert pos.sum(1).tolist() == [128, 20, 0]
    assert neg.sum(1).tolist() == [128, 236, 256]
    assert not (pos & neg).any()
    assert (gt_inds[pos] > 0).all() and (gt_inds[neg] == 0).all()
    # max(pos, 1) + max(neg, 1) per image.
    assert sampler.avg_factor(pos, neg) == 256 + 256 + 257


def test_random_neg_pos_upper_bound():
    sampler = RandomSampler(num=100, pos_fraction=0.25, neg_pos_ub=2,
                            add_gt_as_proposals=False)
    gt_inds = random_gt_inds(2, 500, [10, 0], num_ignore=0, seed=1)
    pos, neg = sampler.sample_batch(make_assign(gt_inds))
    assert pos.sum(1).tolist() == [10, 0]
    # int(2 * max(1, #pos)): 20 and 2.
    assert neg.sum(1).tolist() == [20, 2]


def test_random_too_few_candidates_keeps_all_without_rng():
    sampler = RandomSampler(num=8, pos_fraction=0.5)
    gt_inds = torch.tensor([[1, 0, 0, -1, 2, 0]])
    torch.manual_seed(0)
    state = torch.get_rng_state()
    pos, neg = sampler.sample_batch(make_assign(gt_inds))
    assert torch.equal(torch.get_rng_state(), state)  # no randperm
    assert pos[0].tolist() == [True, False, False, False, True, False]
    assert neg[0].tolist() == [False, True, True, False, False, True]


@pytest.mark.parametrize('neg_pos_ub', [-1, 3])
def test_random_seeded_equals_mmdet_rng_order(neg_pos_ub):
    gt_inds = random_gt_inds(3, 3000, [400, 50, 130], num_ignore=200, seed=2)
    sampler = RandomSampler(num=256, pos_fraction=0.5, neg_pos_ub=neg_pos_ub,
                            add_gt_as_proposals=False)
    torch.manual_seed(1234)
    pos, neg = sampler.sample_batch(make_assign(gt_inds))
    after = torch.rand(1)
    torch.manual_seed(1234)
    ref_pos, ref_neg = mmdet_order_draws(gt_inds, 256, 0.5, neg_pos_ub)
    assert torch.equal(pos, ref_pos)
    assert torch.equal(neg, ref_neg)
    assert torch.equal(torch.rand(1), after)  # same number of draws
    # A different seed picks a different subset.
    torch.manual_seed(99)
    other, _ = sampler.sample_batch(make_assign(gt_inds))
    assert not torch.equal(other, pos)


def test_random_single_image_sample_matches_batch_draws():
    gt_inds = random_gt_inds(1, 1000, [200], num_ignore=10, seed=3)[0]
    priors = torch.rand(1000, 4) * 100
    gt_bboxes = torch.rand(3, 4) * 100
    gt_labels = torch.tensor([0, 1, 2])
    assign = make_assign(gt_inds, gt_labels)
    sampler = RandomSampler(num=64, pos_fraction=0.25,
                            add_gt_as_proposals=False)
    torch.manual_seed(7)
    result = sampler.sample(assign, InstanceData(priors=priors),
                            InstanceData(bboxes=gt_bboxes, labels=gt_labels))
    torch.manual_seed(7)
    ref_pos, ref_neg = mmdet_order_draws(gt_inds[None], 64, 0.25)
    assert result.pos_inds.tolist() == ref_pos[0].nonzero().squeeze(
        1).tolist()
    assert result.neg_inds.tolist() == ref_neg[0].nonzero().squeeze(
        1).tolist()
    assert len(result.pos_inds) == 16 and len(result.neg_inds) == 48
    assert result.avg_factor == 64 and result.avg_factor_with_neg
    assert torch.equal(result.pos_gt_bboxes,
                       gt_bboxes[gt_inds[result.pos_inds] - 1])


def test_add_gt_as_proposals_layout():
    priors = torch.tensor([[0., 0., 10., 10.], [1., 1., 9., 9.],
                           [50., 50., 60., 60.], [70., 70., 80., 80.]])
    gt_bboxes = torch.tensor([[0., 0., 10., 10.], [40., 40., 45., 45.]])
    gt_labels = torch.tensor([4, 9])
    assign = make_assign([1, 1, 0, -1], gt_labels)
    sampler = RandomSampler(num=512, pos_fraction=0.25)
    result = sampler.sample(assign, InstanceData(priors=priors),
                            InstanceData(bboxes=gt_bboxes, labels=gt_labels))
    # Candidates are [GT0, GT1, p0, p1, p2, p3]; GTs are their own positives.
    assert result.pos_inds.tolist() == [0, 1, 2, 3]
    assert result.neg_inds.tolist() == [4]
    assert result.pos_is_gt.tolist() == [1, 1, 0, 0]
    assert result.gt_flags.tolist() == [1, 1, 0, 0, 0, 0]
    assert result.pos_assigned_gt_inds.tolist() == [0, 1, 0, 0]
    assert result.pos_gt_labels.tolist() == [4, 9, 4, 4]
    assert torch.equal(result.pos_priors,
                       torch.cat([gt_bboxes, priors[:2]]))
    assert torch.equal(result.priors,
                       torch.cat([gt_bboxes, priors[:2], priors[2:3]]))
    assert result.avg_factor == 4 + 1
    # The caller's assign result is left as it was.
    assert assign.gt_inds.tolist() == [1, 1, 0, -1]


def test_add_gt_without_gts_adds_nothing():
    priors = torch.rand(3, 4)
    sampler = RandomSampler(num=4, pos_fraction=0.5)
    result = sampler.sample(
        make_assign([0, 0, -1]), InstanceData(priors=priors),
        InstanceData(bboxes=torch.zeros(0, 4),
                     labels=torch.zeros(0, dtype=torch.long)))
    assert result.pos_inds.numel() == 0 and result.neg_inds.tolist() == [0, 1]
    assert result.pos_gt_bboxes.shape == (0, 4)
    assert (result.num_pos, result.num_neg, result.avg_factor) == (1, 2, 3)


def test_sampling_result_rejects_positives_without_gt():
    with pytest.raises(ValueError, match='without ground truth'):
        SamplingResult(torch.tensor([0]), torch.tensor([], dtype=torch.long),
                       torch.rand(2, 4), torch.zeros(0, 4),
                       make_assign([1, 0]), torch.zeros(2, dtype=torch.uint8))


def test_single_image_api_rejects_batched_results():
    batched = make_assign(torch.tensor([[1, 0]]))
    with pytest.raises(ValueError, match='single-image'):
        RandomSampler(4, 0.5).sample(batched, InstanceData(priors=torch.rand(
            2, 4)), InstanceData(bboxes=torch.rand(1, 4),
                                 labels=torch.tensor([0])))


# ------------------------------------------------------- batch currency
def two_image_candidates():
    """Image 0: 2 GTs, 3 proposals; image 1: 1 GT, 2 proposals (padded to
    G = 2, N = 3)."""
    proposals = torch.arange(24, dtype=torch.float32).view(2, 3, 4)
    proposals_valid = torch.tensor([[True, True, True], [True, True, False]])
    gt_bboxes = torch.tensor([[[0., 0., 4., 4.], [1., 1., 5., 5.]],
                              [[2., 2., 6., 6.], [0., 0., 0., 0.]]])
    gt_labels = torch.tensor([[7, 8], [9, -1]])
    gt_valid = torch.tensor([[True, True], [True, False]])
    assign = make_assign(torch.tensor([[2, 0, -1], [0, 1, -1]]))
    assign.labels = torch.tensor([[8, -1, -1], [-1, 9, -1]])
    return assign, proposals, proposals_valid, gt_bboxes, gt_labels, gt_valid


def test_prepend_gts_keeps_each_image_s_gts_first_and_ignores_padding():
    assign, props, props_valid, gt_bboxes, gt_labels, gt_valid = \
        two_image_candidates()
    extended, cands, valid, gt_flags = prepend_gts(
        assign, props, props_valid, gt_bboxes, gt_labels, gt_valid)
    assert cands.shape == (2, 5, 4)
    assert torch.equal(cands[:, :2], gt_bboxes)
    assert torch.equal(cands[:, 2:], props)
    # image 1's padding GT row is ignored (-1), never a candidate
    assert extended.gt_inds.tolist() == [[1, 2, 2, 0, -1], [1, -1, 0, 1, -1]]
    assert extended.labels.tolist() == [[7, 8, 8, -1, -1],
                                        [9, -1, -1, 9, -1]]
    assert extended.max_overlaps[:, :2].tolist() == [[1, 1], [1, -1]]
    assert valid.tolist() == [[True] * 5, [True, False, True, True, False]]
    assert gt_flags.tolist() == [[True, True, False, False, False],
                                 [True, False, False, False, False]]
    assert assign.gt_inds.shape == (2, 3)  # the input is not modified


def test_batch_result_roi_order_and_per_image_view():
    assign, props, props_valid, gt_bboxes, gt_labels, gt_valid = \
        two_image_candidates()
    extended, cands, valid, gt_flags = prepend_gts(
        assign, props, props_valid, gt_bboxes, gt_labels, gt_valid)
    pos, neg = PseudoSampler().sample_batch(extended)
    res = BatchSamplingResult(cands, valid, gt_flags, extended, pos, neg,
                              gt_bboxes, avg_factor_with_neg=False)
    img, cand = res.roi_index()
    # per image: positives then negatives, each by ascending candidate
    assert list(zip(img.tolist(), cand.tolist())) == [
        (0, 0), (0, 1), (0, 2), (0, 3), (1, 0), (1, 3), (1, 2)]
    rois = res.rois()
    assert rois[:, 0].tolist() == [0, 0, 0, 0, 1, 1, 1]
    assert torch.equal(rois[4:, 1:], cands[1, [0, 3, 2]])
    # image 1 without padding is [GT ; p0 ; p1]: positives GT and p1
    one = res[1]
    assert len(res) == 2 and isinstance(one, SamplingResult)
    assert one.pos_inds.tolist() == [0, 2] and one.neg_inds.tolist() == [1]
    assert one.pos_is_gt.tolist() == [1, 0]
    assert one.pos_assigned_gt_inds.tolist() == [0, 0]
    assert torch.equal(one.priors, cands[1, [0, 3, 2]])
    assert one.avg_factor == 2 and one.num_gts == 1
    with pytest.raises(IndexError, match='image 2'):
        res[2]
