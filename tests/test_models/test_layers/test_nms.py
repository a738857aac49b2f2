"""batched_nms / multiclass_nms: mmdetection references and hand cases."""
import pytest
import torch
from conftest import load_reference

from detkit.models.layers import batched_nms, multiclass_nms, nms

CFG = dict(type='nms', iou_threshold=0.5)


def test_multiclass_nms_matches_mmdet_reference():
    ref = load_reference('multiclass_nms.pt')
    inputs, out = ref['inputs'], ref['outputs']
    dets, labels, inds = multiclass_nms(
        inputs['multi_bboxes'], inputs['multi_scores'], inputs['score_thr'],
        dict(type='nms', iou_threshold=inputs['iou_threshold']),
        max_num=inputs['max_num'], return_inds=True)
    assert torch.equal(dets, out['dets'])
    assert torch.equal(labels, out['labels'])
    assert torch.equal(inds, out['inds'])
    dets, labels = multiclass_nms(inputs['boxes'], inputs['multi_scores'],
                                  inputs['score_thr'], CFG,
                                  max_num=inputs['max_num'])
    assert torch.equal(dets, out['dets_shared'])
    assert torch.equal(labels, out['labels_shared'])


def test_batched_nms_matches_mmdet_reference():
    ref = load_reference('multiclass_nms.pt')
    inputs, out = ref['inputs'], ref['outputs']
    scores, classes = inputs['multi_scores'][:, :-1].max(1)
    dets, keep = batched_nms(inputs['boxes'], scores, classes, CFG)
    assert torch.equal(dets, out['bnms_dets'])
    assert torch.equal(keep, out['bnms_keep'])
    # The large-input path (split_thr) keeps the same boxes here.
    split = batched_nms(inputs['boxes'], scores, classes,
                        dict(CFG, split_thr=10))
    assert torch.equal(split[0], out['bnms_dets'])
    assert torch.equal(split[1], out['bnms_keep'])


BOXES = torch.tensor([[0., 0., 10., 10.],
                      [0., 0., 10., 5.],     # IoU 0.5 with box 0: kept
                      [0., 0., 10., 6.],     # IoU 0.6 with box 0: dropped
                      [20., 20., 30., 30.]])
SCORES = torch.tensor([0.9, 0.8, 0.7, 0.6])


def test_suppression_is_strictly_above_threshold():
    dets, keep = batched_nms(BOXES, SCORES, torch.zeros(4, dtype=torch.long),
                             CFG)
    assert keep.tolist() == [0, 1, 3]
    assert torch.equal(dets, torch.cat([BOXES[keep], SCORES[keep, None]],
                                       1))
    # IoU(box 2, box 1) = 50 / 60: dropped at 0.8, kept at 0.85.
    for thr, expected in ((0.8, [0, 1, 3]), (0.85, [0, 1, 2, 3])):
        _, keep = batched_nms(BOXES, SCORES, torch.zeros(4),
                              dict(type='nms', iou_threshold=thr))
        assert keep.tolist() == expected


def test_groups_do_not_suppress_each_other():
    idxs = torch.tensor([0, 0, 1, 0])
    _, keep = batched_nms(BOXES, SCORES, idxs, CFG)
    assert keep.tolist() == [0, 1, 2, 3]
    _, keep = batched_nms(BOXES, SCORES, idxs, CFG, class_agnostic=True)
    assert keep.tolist() == [0, 1, 3]
    _, keep = batched_nms(BOXES, SCORES, idxs,
                          dict(CFG, class_agnostic=True))
    assert keep.tolist() == [0, 1, 3]


def test_no_cfg_sorts_only_and_empty_input():
    scores = torch.tensor([0.1, 0.9, 0.5, 0.7])
    dets, keep = batched_nms(BOXES, scores, torch.zeros(4), None)
    assert keep.tolist() == [1, 3, 2, 0]
    assert dets[:, 4].tolist() == pytest.approx([0.9, 0.7, 0.5, 0.1])
    dets, keep = batched_nms(torch.zeros(0, 4), torch.zeros(0),
                             torch.zeros(0, dtype=torch.long), CFG)
    assert dets.shape == (0, 5) and keep.shape == (0, )


def test_split_path_resorts_union_by_score():
    g = torch.Generator().manual_seed(0)
    xy = torch.rand(300, 2, generator=g) * 100
    boxes = torch.cat([xy, xy + torch.rand(300, 2, generator=g) * 40 + 1], 1)
    scores = torch.rand(300, generator=g)
    idxs = torch.randint(0, 5, (300, ), generator=g)
    small = batched_nms(boxes, scores, idxs, CFG)
    split = batched_nms(boxes, scores, idxs, dict(CFG, split_thr=100))
    assert torch.equal(small[1], split[1])
    assert torch.equal(small[0], split[0])
    # max_num applies to the split path's union.
    capped = batched_nms(boxes, scores, idxs,
                         dict(CFG, split_thr=100, max_num=7))
    assert torch.equal(capped[1], small[1][:7])


def test_kernel_options():
    dets, keep = nms(BOXES, SCORES, 0.5, score_threshold=0.75)
    assert keep.tolist() == [0, 1]  # boxes 2, 3 fall below 0.75 first
    dets, keep = nms(BOXES, SCORES, 0.5, max_num=2)
    assert keep.tolist() == [0, 1]
    with pytest.raises(ValueError, match='offset'):
        nms(BOXES, SCORES, 0.5, offset=1)
    with pytest.raises(ValueError, match="type 'nms_rotated' is not"):
        batched_nms(BOXES, SCORES, torch.zeros(4), dict(type='nms_rotated'))
    with pytest.raises(ValueError, match='iou_threshold'):
        batched_nms(BOXES, SCORES, torch.zeros(4), dict(type='nms'))
    # The legacy key name.
    _, keep = batched_nms(BOXES, SCORES, torch.zeros(4),
                          dict(type='nms', iou_thr=0.5))
    assert keep.tolist() == [0, 1, 3]


def test_multiclass_nms_hand_case():
    # Two boxes x 2 classes (+ background column, ignored).
    boxes = torch.tensor([[0., 0., 10., 10.], [0., 0., 10., 9.]])
    scores = torch.tensor([[0.9, 0.05, 0.99], [0.8, 0.3, 0.99]])
    dets, labels, inds = multiclass_nms(boxes, scores, 0.05, CFG,
                                        return_inds=True)
    # class 0: box 1 (IoU 0.9) suppressed by box 0; class 1: only box 1
    # (0.05 is not > score_thr).
    assert labels.tolist() == [0, 1]
    assert inds.tolist() == [0, 3]  # n * C + c
    assert dets[:, 4].tolist() == pytest.approx([0.9, 0.3])
    # score_factors scale scores after the threshold test.
    dets, labels = multiclass_nms(boxes, scores, 0.05, CFG,
                                  score_factors=torch.tensor([0.5, 0.1]))
    assert dets[:, 4].tolist() == pytest.approx([0.45, 0.03])
    # max_num and the empty result.
    dets, labels = multiclass_nms(boxes, scores, 0.05, CFG, max_num=1)
    assert labels.tolist() == [0]
    dets, labels, inds = multiclass_nms(boxes, scores, 0.95, CFG,
                                        return_inds=True)
    assert dets.shape == (0, 5) and labels.shape == inds.shape == (0, )


def test_multiclass_nms_class_specific_boxes():
    boxes = torch.tensor([[0., 0., 10., 10., 50., 50., 60., 60.]])
    scores = torch.tensor([[0.6, 0.7, 0.0]])
    dets, labels = multiclass_nms(boxes, scores, 0.1, CFG)
    assert labels.tolist() == [1, 0]
    assert dets[:, :4].tolist() == [[50., 50., 60., 60.], [0., 0., 10., 10.]]
    with pytest.raises(ValueError, match='classes'):
        multiclass_nms(torch.zeros(1, 12), scores, 0.1, CFG)
