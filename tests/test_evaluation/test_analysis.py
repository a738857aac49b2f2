"""detkit.evaluation.analysis: the numbers the analysis tools and the HTML
report share, on hand-worked cases (and the fast per-image AP against
eval_map, its definition)."""
import contextlib
import io

import numpy as np
import pytest
import torch
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from detkit.evaluation import eval_map
from detkit.evaluation.analysis import (IOU_THRS, best_f1_threshold,
                                        calculate_confusion_matrix,
                                        class_metrics, coco_summary,
                                        detection_matches, error_breakdown,
                                        image_map, pr_curves, rank_images)


def _result(boxes, scores, labels):
    return dict(pred_instances=dict(
        bboxes=torch.tensor(boxes, dtype=torch.float64).reshape(-1, 4),
        scores=torch.tensor(scores, dtype=torch.float64),
        labels=torch.tensor(labels, dtype=torch.int64)))


def _truth(boxes, labels, ignore=None):
    boxes = np.array(boxes, dtype=np.float64).reshape(-1, 4)
    return dict(img_path='x.png', bboxes=boxes,
                labels=np.array(labels, dtype=np.int64),
                ignore=np.zeros(len(boxes), bool) if ignore is None else
                np.array(ignore, bool))


def _eval_map_image_ap(result, truth, num_classes):
    """The definition: eval_map on the image alone, once per threshold."""
    pred = result['pred_instances']
    bboxes, scores, labels = (pred['bboxes'].numpy(), pred['scores'].numpy(),
                              pred['labels'].numpy())
    dets = [[np.hstack([bboxes[labels == c], scores[labels == c, None]])
             for c in range(num_classes)]]
    keep = ~truth['ignore']
    ann = dict(bboxes=truth['bboxes'][keep], labels=truth['labels'][keep],
               bboxes_ignore=truth['bboxes'][~keep],
               labels_ignore=truth['labels'][~keep])
    return float(np.mean([eval_map(dets, [ann], iou_thr=float(t))[0]
                          for t in IOU_THRS]))


def test_image_map_equals_eval_map_per_threshold():
    rng = np.random.default_rng(0)
    num_classes, nonzero = 4, 0
    for _ in range(150):
        g = int(rng.integers(0, 6))
        xy = rng.uniform(0, 100, (g, 2))
        gt = np.hstack([xy, xy + rng.uniform(5, 40, (g, 2))])
        gt_labels = rng.integers(0, num_classes, g)
        ignore = rng.random(g) < 0.2
        d = int(rng.integers(0, 12))
        near = gt[rng.integers(0, g, d)] if g else np.tile([0, 0, 9, 9], (d,
                                                                          1))
        boxes = near + rng.normal(0, 4, (d, 4))
        labels = np.where(rng.random(d) < .7,
                          gt_labels[rng.integers(0, g, d)] if g else 0,
                          rng.integers(0, num_classes, d))
        scores = np.round(rng.random(d), 1)  # ties on purpose
        result = _result(boxes, scores, labels)
        truth = _truth(gt, gt_labels, ignore)
        expected = _eval_map_image_ap(result, truth, num_classes)
        assert image_map(result, truth, num_classes) == expected
        nonzero += expected > 0
    assert nonzero > 50  # the cases exercise matching, not just zeros


def test_image_map_and_ranking_by_hand():
    # Image a: one class-0 object [0, 0, 10, 10]; detections (score order)
    # [0, 0, 10, 10] (IoU 1) then [0, 0, 10, 14] (IoU 100 / 140 = 0.714, a
    # duplicate: false positive). Precision 1 at recall 1 -> AP 1 at every
    # threshold.
    a = (_result([[0, 0, 10, 10], [0, 0, 10, 14]], [.9, .8], [0, 0]),
         _truth([[0, 0, 10, 10]], [0]))
    # Image b: the same object found only by [0, 0, 10, 14]: TP for the
    # 5 thresholds 0.5 ... 0.7 (0.714 >= 0.7), FP for 0.75 ... 0.95 ->
    # mean AP 5 / 10 = 0.5. Its class-1 detection on nothing changes
    # nothing (class 1 has no ground truth in b).
    b = (_result([[0, 0, 10, 14], [50, 50, 60, 60]], [.9, .95], [0, 1]),
         _truth([[0, 0, 10, 10]], [0]))
    # Image c: no ground truth -> 0.
    c = (_result([[0, 0, 5, 5]], [.5], [0]), _truth([], []))
    # Image d: a crowd (ignored) class-0 box found, and a class-1 object
    # found exactly: only class 1 counts -> 1.
    d = (_result([[0, 0, 10, 10], [20, 20, 30, 30]], [.9, .9], [0, 1]),
         _truth([[0, 0, 10, 10], [20, 20, 30, 30]], [0, 1], [True, False]))
    assert image_map(*a, 2) == 1.0
    assert image_map(*b, 2) == pytest.approx(0.5)
    assert image_map(*c, 2) == 0.0
    assert image_map(*d, 2) == 1.0
    ranked = rank_images([a, b, c, d], 2)
    # ascending, ties in input order (a before d)
    assert [r for _, r, _ in ranked] == [c[0], b[0], a[0], d[0]]


def test_confusion_matrix_by_hand():
    # Classes 0, 1 (+ background = index 2). One image, ground truths
    # g0 = class 0 [0, 0, 10, 10], g1 = class 1 [20, 0, 30, 10].
    truth = _truth([[0, 0, 10, 10], [20, 0, 30, 10]], [0, 1])
    result = _result(
        [
            [0, 0, 10, 10],    # class 0 on g0: [0, 0] += 1, g0 found
            [0, 0, 10, 11],    # class 0 on g0 again (IoU 0.91): [0, 0] += 1
            [20, 0, 30, 10],   # class 0 on g1: [1, 0] += 1 (confusion)
            [50, 50, 60, 60],  # class 1 on nothing: [2, 1] += 1
            [20, 0, 30, 10],   # class 1 on g1 but score 0.2 < 0.3: ignored
        ], [.9, .8, .7, .6, .2], [0, 0, 0, 1, 1])
    matrix = calculate_confusion_matrix([(result, truth)], 2)
    # g1 is never found by a class-1 detection above 0.3: [1, 2] += 1.
    assert matrix.tolist() == [[2, 0, 0], [1, 0, 1], [0, 1, 0]]
    # Per-class NMS at 0.5 first drops the 0.91-IoU duplicate.
    matrix = calculate_confusion_matrix([(result, truth)], 2,
                                        nms_iou_thr=0.5)
    assert matrix.tolist() == [[1, 0, 0], [1, 0, 1], [0, 1, 0]]
    # With score_thr 0.1 the class-1 box on g1 counts and finds it.
    matrix = calculate_confusion_matrix([(result, truth)], 2, score_thr=0.1)
    assert matrix.tolist() == [[2, 0, 0], [1, 1, 0], [0, 1, 0]]


def test_best_f1_threshold_by_hand():
    # 4 objects; detections in score order T F T T F (two at 0.8). Cuts
    # where the score changes: after 0.9: TP 1, FP 0 -> F1 2 / 5 = 0.4;
    # after the 0.8s: 2, 1 -> 4 / 7; after 0.5: 3, 1 -> 6 / 8 = 0.75;
    # after 0.3: 3, 2 -> 6 / 9.
    best = best_f1_threshold(np.array([.9, .8, .8, .5, .3]),
                             np.array([True, False, True, True, False]), 4)
    assert best == dict(threshold=0.5, f1=0.75, precision=0.75, recall=0.75,
                        tp=3, fp=1)
    none = best_f1_threshold(np.array([.4]), np.array([False]), 2)
    assert none['threshold'] is None and none['f1'] == 0.0


def hand_coco():
    """Two classes, A (id 1) and B (id 2), two images.

    Image 1 ground truths: A1 [0,0,10,10], A2 [20,0,30,10], B1
    [40,0,50,10], A3 [60,0,70,10] (xyxy); image 2: A4 [5,5,25,25]. Class-A
    detections of image 1, by score: d1 0.9 on A1 (IoU 1), d2 0.8 on A2
    shifted ([22,0,32,10], IoU 80 / 120 = 0.667), d3 0.7 exactly on B1 (a
    class confusion), d4 0.6 on background, d5 0.5 loosely on A3
    ([60,0,70,30], IoU 100 / 300 = 0.333); class B: 0.9 exactly on B1.
    Nothing finds A4.
    """
    def ann(i, img, cat, x1, y1, x2, y2):
        return dict(id=i, image_id=img, category_id=cat,
                    bbox=[x1, y1, x2 - x1, y2 - y1],
                    area=(x2 - x1) * (y2 - y1), iscrowd=0)

    gt = COCO()
    gt.dataset = dict(
        images=[dict(id=1, width=120, height=40),
                dict(id=2, width=40, height=40)],
        categories=[dict(id=1, name='A'), dict(id=2, name='B')],
        annotations=[ann(1, 1, 1, 0, 0, 10, 10), ann(2, 1, 1, 20, 0, 30, 10),
                     ann(3, 1, 2, 40, 0, 50, 10), ann(4, 1, 1, 60, 0, 70, 10),
                     ann(5, 2, 1, 5, 5, 25, 25)])
    with contextlib.redirect_stdout(io.StringIO()):
        gt.createIndex()

    def det(cat, score, x1, y1, x2, y2):
        return dict(image_id=1, category_id=cat, score=score,
                    bbox=[x1, y1, x2 - x1, y2 - y1])

    dets = [det(1, .9, 0, 0, 10, 10), det(1, .8, 22, 0, 32, 10),
            det(1, .7, 40, 0, 50, 10), det(1, .6, 100, 30, 110, 40),
            det(1, .5, 60, 0, 70, 30), det(2, .9, 40, 0, 50, 10)]
    with contextlib.redirect_stdout(io.StringIO()):
        dt = gt.loadRes(dets)
        coco_eval = COCOeval(gt, dt, 'bbox')
        coco_eval.params.maxDets = [100, 300, 1000]  # as CocoMetric sets
        coco_eval.evaluate()
        coco_eval.accumulate()
        coco_eval.summarize()
    return coco_eval


def test_coco_numbers_by_hand():
    coco_eval = hand_coco()
    # COCO AP: the mean of the interpolated precision at the 101 recall
    # thresholds 0, 0.01, ..., 1. Class A (4 objects) at IoU 0.5: d1, d2
    # true, d3-d5 false -> precision 1 up to recall 0.5: 51 of the 101
    # thresholds -> 51 / 101. At IoU >= 0.7 only d1 is true (d2's IoU is
    # 0.667): precision 1 up to recall 0.25 -> 26 / 101. Over the 10 IoU
    # thresholds (4 at or below 0.65, 6 above): (4 * 51 + 6 * 26) / 1010.
    ap_a = (4 * 51 + 6 * 26) / 1010
    rows = class_metrics(coco_eval)
    assert rows[0]['AP'] == pytest.approx(ap_a)
    assert rows[0]['AP50'] == pytest.approx(51 / 101)
    assert rows[0]['AP75'] == pytest.approx(26 / 101)
    assert rows[0]['recall50'] == pytest.approx(0.5)
    assert (rows[0]['num_gts'], rows[0]['num_dets']) == (4, 5)
    assert rows[1]['AP'] == pytest.approx(1) == rows[1]['AP50']  # B: exact
    assert (rows[1]['num_gts'], rows[1]['num_dets']) == (1, 1)
    summary = {k: v for k, _, v in coco_summary(coco_eval)}
    assert summary['mAP'] == pytest.approx((ap_a + 1) / 2)
    assert summary['mAP_50'] == pytest.approx((51 / 101 + 1) / 2)
    assert summary['mAP_l'] == -1  # no large object
    assert list(summary)[6:9] == ['AR@100', 'AR@300', 'AR@1000']
    rec, prec = pr_curves(coco_eval, .5)
    assert rec.shape == (101, ) and prec.shape == (2, 101)
    assert (prec[0, :51] == 1).all() and (prec[0, 51:] == 0).all()
    assert pr_curves(coco_eval, .3) is None


def test_error_breakdown_by_hand():
    coco_eval = hand_coco()
    # Class A's curves (recall thresholds r = 0, 0.01, ..., 1; 4 objects):
    # AP50: 51/101 and AP75: 26/101 (above).
    # Loc (IoU 0.1): d5 becomes true: TP 1,2,2,2,3 / FP 0,0,1,2,2 ->
    #   precision 1 for r <= 0.5 (51), then 3/5 up to r = 0.75 (25):
    #   (51 + 25 * 0.6) / 101 = 66 / 101.
    # Oth: d3 lies on B1, now a crowd region of class A -> ignored:
    #   TP 1,2,2,3 / FP 0,0,1,1 -> 1 for r <= 0.5, then 3/4 up to 0.75:
    #   (51 + 25 * 0.75) / 101 = 69.75 / 101.
    # BG: precision 1 up to the recall Oth reached (0.75): 76 / 101.
    # Missed: 1 - 76/101 = 25/101 (A4, a quarter of the objects).
    breakdown = error_breakdown(coco_eval)
    stages, losses, overall = (breakdown['stages'], breakdown['losses'],
                               breakdown['overall'])
    expected = dict(AP75=26, AP50=51, Loc=66, Oth=69.75, BG=76)
    for name, value in expected.items():
        assert stages[name][0] == pytest.approx(value / 101), name
        assert stages[name][1] == pytest.approx(1), name  # B: perfect
        assert overall[name] == pytest.approx((value / 101 + 1) / 2), name
    assert losses['localisation'][0] == pytest.approx(15 / 101)
    assert losses['confusion'][0] == pytest.approx(3.75 / 101)
    assert losses['background'][0] == pytest.approx(6.25 / 101)
    assert losses['missed'][0] == pytest.approx(25 / 101)
    total = stages['AP50'] + sum(losses.values())
    assert total == pytest.approx([1, 1])
    assert overall['AP50'] == pytest.approx(coco_eval.stats[1])
    # The evaluation object itself is left as it was.
    assert coco_eval.params.iouThrs[0] == 0.5
    assert len(coco_eval.cocoGt.dataset['annotations']) == 5


def test_detection_matches_and_thresholds_by_hand():
    coco_eval = hand_coco()
    matches = detection_matches(coco_eval, .5)
    # Class A at IoU 0.5: d1, d2 true; d3, d4, d5 false; 4 objects.
    assert matches[0]['scores'].tolist() == [.9, .8, .7, .6, .5]
    assert matches[0]['is_tp'].tolist() == [True, True, False, False, False]
    assert matches[0]['num_gts'] == 4
    assert matches[1]['is_tp'].tolist() == [True]
    # F1 after d1: 2 / (4 + 1) = 0.4; after d2: 4 / 6 = 0.667; then lower.
    best = best_f1_threshold(**{k: matches[0][k] for k in
                                ('scores', 'is_tp', 'num_gts')})
    assert best['threshold'] == 0.8 and best['f1'] == pytest.approx(2 / 3)
    assert detection_matches(coco_eval, .3) is None
