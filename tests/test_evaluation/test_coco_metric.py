"""CocoMetric on hand-made cases whose AP / AR are worked out by hand."""
import json

import numpy as np
import pytest
import torch
from eval_samples import sample

from detkit.evaluation import CocoMetric

# 101-point COCO AP. With P3 a true positive (IoU 2/3 >= t for t in .50,
# .55, .60, .65): recall 0.5 at precision 1, recall 1 at precision 2/3, so
# the 51 recall points 0..0.50 get 1 and the 50 points 0.51..1 get 2/3.
AP_P3_TP = (51 + 50 * 2 / 3) / 101  # 0.834983
# With P3 a false positive (t = .70 ... .95): recall never passes 0.5.
AP_P3_FP = 51 / 101  # 0.504950
MAP = (4 * AP_P3_TP + 6 * AP_P3_FP) / 10  # 0.636964


def _evaluate(metric, samples, classes=('cat', )):
    metric.dataset_meta = dict(classes=classes)
    metric.process({}, samples)
    return metric.evaluate(size=len(samples))


def test_bbox_map_from_instances():
    results = _evaluate(CocoMetric(), [sample()])
    assert results == {
        'coco/bbox_mAP': round(MAP, 3),  # 0.637
        'coco/bbox_mAP_50': round(AP_P3_TP, 3),  # 0.835
        'coco/bbox_mAP_75': round(AP_P3_FP, 3),  # 0.505
        'coco/bbox_mAP_s': 0.637,  # every box is small (< 32 x 32)
        'coco/bbox_mAP_m': -1.0,  # no medium or large ground truth
        'coco/bbox_mAP_l': -1.0,
    }


def test_crowd_detection_is_ignored_not_false_positive():
    # Without the crowd region, the detection on it is a false positive
    # ranked second: precision at recall 0.5 drops to 1 then 1/2, at recall
    # 1 to 2/4 for t <= .65.
    results = _evaluate(CocoMetric(), [sample(ignored_boxes=[])])
    ap_tp = (51 + 50 * 2 / 4) / 101
    assert results['coco/bbox_mAP_50'] == round(ap_tp, 3)  # 0.752
    assert results['coco/bbox_mAP'] == round(
        (4 * ap_tp + 6 * AP_P3_FP) / 10, 3)


def test_classwise_and_ann_file_categories_by_name(tmp_path):
    # The json lists 'dog' (id 7) before 'cat' (id 3); the classes are
    # ('cat', 'dog'), so label 0 must map to id 3 and label 1 to id 7.
    ann = dict(
        images=[dict(id=1, width=100, height=100, file_name='a.jpg')],
        categories=[dict(id=7, name='dog'), dict(id=3, name='cat')],
        annotations=[
            dict(id=1, image_id=1, category_id=3, bbox=[0, 0, 10, 10],
                 area=100, iscrowd=0),
            dict(id=2, image_id=1, category_id=3, bbox=[20, 20, 10, 10],
                 area=100, iscrowd=0),
            dict(id=3, image_id=1, category_id=3, bbox=[40, 0, 20, 20],
                 area=400, iscrowd=1),
            dict(id=4, image_id=1, category_id=7, bbox=[60, 60, 30, 30],
                 area=900, iscrowd=0),
        ])
    ann_file = tmp_path / 'ann.json'
    ann_file.write_text(json.dumps(ann))
    dog = sample(pred_boxes=[[60, 60, 90, 90]], scores=[0.6],
                 pred_labels=[1])['pred_instances']
    one = sample()
    for key in ('bboxes', 'scores', 'labels'):
        one['pred_instances'][key] = torch.cat(
            [one['pred_instances'][key], dog[key]])
    results = _evaluate(
        CocoMetric(ann_file=str(ann_file), classwise=True,
                   outfile_prefix=str(tmp_path / 'out')), [one],
        classes=('cat', 'dog'))
    assert results['coco/bbox_cat_precision'] == round(MAP, 3)
    assert results['coco/bbox_dog_precision'] == 1.0
    assert results['coco/bbox_mAP'] == round((MAP + 1) / 2, 3)  # 0.818
    written = json.loads((tmp_path / 'out.bbox.json').read_text())
    assert [d['category_id'] for d in written] == [3, 3, 3, 3, 7]


def test_format_only_writes_coco_results(tmp_path):
    metric = CocoMetric(format_only=True, outfile_prefix=str(tmp_path / 'r'))
    s = sample(pred_boxes=[[1, 2, 11, 22], [5, 5, 6, 7]],
               scores=[0.75, 0.5], pred_labels=[1, 0])
    assert _evaluate(metric, [s], classes=('cat', 'dog')) == {}
    written = json.loads((tmp_path / 'r.bbox.json').read_text())
    assert written == [
        dict(image_id=1, bbox=[1.0, 2.0, 10.0, 20.0], score=0.75,
             category_id=1),
        dict(image_id=1, bbox=[5.0, 5.0, 1.0, 2.0], score=0.5,
             category_id=0),
    ]


# Proposals: P1 = A exactly (0.9), junk (0.8), P3 (IoU 2/3 with B, 0.7).
# AR@1 = AR@2: only A recalled at every threshold -> 0.5. AR@3: B also for
# t <= .65 -> (4 * 1 + 6 * 0.5) / 10 = 0.7.
PROPOSALS = dict(pred_boxes=[[0, 0, 10, 10], [50, 50, 60, 60],
                             [20, 22, 30, 32]],
                 scores=[0.9, 0.8, 0.7])


def test_proposal_fast_average_recall():
    results = _evaluate(
        CocoMetric(metric='proposal_fast', proposal_nums=(1, 2, 3)),
        [sample(**PROPOSALS)])
    assert results == pytest.approx({
        'coco/AR@1': 0.5, 'coco/AR@2': 0.5, 'coco/AR@3': 0.7})


def test_proposal_through_pycocotools():
    results = _evaluate(
        CocoMetric(metric='proposal', proposal_nums=(1, 2, 3)),
        [sample(**PROPOSALS)])
    assert results == {
        'coco/AR@1': 0.5, 'coco/AR@2': 0.5, 'coco/AR@3': 0.7,
        'coco/AR_s@3': 0.7, 'coco/AR_m@3': -1.0, 'coco/AR_l@3': -1.0}


def test_default_proposal_keys_and_bad_arguments():
    metric = CocoMetric(metric='proposal')
    assert metric._proposal_items() == [
        'AR@100', 'AR@300', 'AR@1000', 'AR_s@1000', 'AR_m@1000', 'AR_l@1000']
    with pytest.raises(KeyError, match='segm'):
        CocoMetric(metric='segm')
    with pytest.raises(ValueError, match='outfile_prefix'):
        CocoMetric(format_only=True)
    with pytest.raises(KeyError, match="'mAP_xl'"):
        _evaluate(CocoMetric(metric_items=['mAP_xl']), [sample()])


def test_no_predictions_gives_zero():
    s = sample(pred_boxes=np.zeros((0, 4)).tolist(), scores=[])
    results = _evaluate(CocoMetric(), [s])
    assert results['coco/bbox_mAP'] == 0.0
