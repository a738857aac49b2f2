"""VOCMetric, eval_map and eval_recalls on hand-made cases."""
import numpy as np
import pytest
from eval_samples import sample

from detkit.evaluation import (VOCMetric, average_precision, box_iou_np,
                               eval_map, eval_recalls)

# P1 TP, P4 on the difficult box (neither), P2 FP, P3 TP (legacy IoU
# 99/143 = 0.692): precision/recall (1, .5), (.5, .5), (2/3, 1).
# 'area': 0.5 * 1 + 0.5 * 2/3. '11points': recall >= 0, .1, ... .5 -> 1
# (6 points), >= .6 ... 1 -> 2/3 (5 points).
AREA_AP = 0.5 + 0.5 * 2 / 3  # 0.833333
ELEVEN_POINT_AP = (6 + 5 * 2 / 3) / 11  # 0.848485


def _evaluate(metric, samples, classes=('cat', )):
    metric.dataset_meta = dict(classes=classes)
    metric.process({}, samples)
    return metric.evaluate(size=len(samples))


def test_voc_area_and_11points():
    area = _evaluate(VOCMetric(eval_mode='area'), [sample()])
    assert area['pascal_voc/mAP'] == pytest.approx(AREA_AP)
    assert area['pascal_voc/AP50'] == 0.833
    eleven = _evaluate(VOCMetric(), [sample()])  # '11points' by default
    assert eleven['pascal_voc/mAP'] == pytest.approx(ELEVEN_POINT_AP)
    assert eleven['pascal_voc/AP50'] == 0.848


def test_difficult_box_is_neither_tp_nor_fp():
    # Without the difficult box, P4 becomes a false positive ranked second:
    # (1, .5), (.5, .5), (.33, .5), (.5, 1) -> area AP = .5 + .5 * .5.
    results = _evaluate(VOCMetric(eval_mode='area'),
                        [sample(ignored_boxes=[])])
    assert results['pascal_voc/mAP'] == pytest.approx(0.75)


def test_several_iou_thresholds_and_iou_thr_alias():
    # At IoU 0.75, P3 (0.692) is a false positive: AP = 0.5 * 1.
    results = _evaluate(VOCMetric(iou_thrs=[0.5, 0.75], eval_mode='area'),
                        [sample()])
    assert list(results) == ['pascal_voc/mAP', 'pascal_voc/AP50',
                             'pascal_voc/AP75']
    assert results['pascal_voc/AP75'] == 0.5
    assert results['pascal_voc/mAP'] == pytest.approx((AREA_AP + 0.5) / 2)
    alias = _evaluate(VOCMetric(iou_thr=0.75, eval_mode='area'), [sample()])
    assert alias['pascal_voc/AP75'] == 0.5


def test_legacy_coordinates_decide_a_borderline_match():
    # Plain IoU of P3 with B is 2/3, VOC's +1 pixel IoU 0.692: at 0.68 only
    # the latter is a match.
    assert box_iou_np([[20, 22, 30, 32]], [[20, 20, 30, 30]])[0, 0] == \
        pytest.approx(2 / 3)
    assert box_iou_np([[20, 22, 30, 32]], [[20, 20, 30, 30]],
                      use_legacy_coordinate=True)[0, 0] == pytest.approx(
                          99 / 143)
    results = _evaluate(VOCMetric(iou_thrs=0.68, eval_mode='area'),
                        [sample()])
    assert results['pascal_voc/mAP'] == pytest.approx(AREA_AP)


def test_mean_over_classes_with_ground_truth_only():
    # Class 1 has one ground truth found at rank 2 of 2 (AP 0.5); class 2
    # has a detection but no ground truth and is left out of the mean.
    dets = [[
        np.array([[0, 0, 10, 10, .9]]),
        np.array([[50, 50, 60, 60, .9], [70, 70, 80, 80, .8]]),
        np.array([[0, 0, 5, 5, .5]]),
    ]]
    anns = [dict(bboxes=np.array([[0, 0, 10, 10], [70, 70, 80, 80]]),
                 labels=np.array([0, 1]))]
    mean_ap, per_class = eval_map(dets, anns, eval_mode='area')
    assert [r['ap'] for r in per_class] == [1.0, 0.5, 0.0]
    assert [r['num_gts'] for r in per_class] == [1, 1, 0]
    assert mean_ap == pytest.approx(0.75)


def test_scale_ranges_count_only_boxes_in_range():
    # A (10 x 10) is small, G (40 x 40) large; range (0, 32) keeps A only.
    dets = [[np.array([[0, 0, 10, 10, .9], [50, 50, 90, 90, .8]])]]
    anns = [dict(bboxes=np.array([[0, 0, 10, 10], [50, 50, 90, 90]]),
                 labels=np.array([0, 0]))]
    mean_aps, per_class = eval_map(dets, anns,
                                   scale_ranges=[(0, 32), (32, 1e5)],
                                   eval_mode='area')
    assert list(per_class[0]['num_gts']) == [1, 1]
    assert mean_aps == pytest.approx([1.0, 1.0])
    results = _evaluate(
        VOCMetric(scale_ranges=[(0, 32), (32, 1e5)], eval_mode='area'),
        [sample()])
    assert results['pascal_voc/AP50_0-32'] == 0.833


def test_average_precision_modes_directly():
    recalls = np.array([0.5, 0.5, 1.0])
    precisions = np.array([1.0, 0.5, 2 / 3])
    assert average_precision(recalls, precisions) == pytest.approx(AREA_AP)
    assert average_precision(recalls, precisions, '11points') == \
        pytest.approx(ELEVEN_POINT_AP)
    with pytest.raises(ValueError, match='11points'):
        average_precision(recalls, precisions, 'voc')


def test_eval_recalls_greedy_one_to_one():
    # One proposal overlapping both ground truths can recall only one.
    gts = [np.array([[0, 0, 10, 10], [0, 0, 10, 9]])]
    props = [np.array([[0, 0, 10, 10, .9], [100, 100, 110, 110, .8]])]
    recalls = eval_recalls(gts, props, proposal_nums=[1, 2],
                           iou_thrs=[0.5, 0.95])
    np.testing.assert_allclose(recalls, [[0.5, 0.5], [0.5, 0.5]])
    # VOCMetric(metric='recall') on the shared sample: B is recalled only
    # by P3, the last of the 4 predictions (scores .9 .85 .8 .7).
    results = _evaluate(VOCMetric(metric='recall', proposal_nums=(1, 4)),
                        [sample()])
    assert results == {'pascal_voc/recall@1@0.5': 0.5,
                       'pascal_voc/recall@4@0.5': 1.0}
