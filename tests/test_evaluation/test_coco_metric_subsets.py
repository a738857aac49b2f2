"""CocoMetric scores the images that were predicted (part of a dataset:
``indices``, a shard), says how many of the file's images that is, keeps
mmdetection's all-images scoring behind ``eval_all_images=True``, and
refuses or warns about annotation files it cannot score meaningfully."""
import json
import logging

import pytest
import torch
from eval_samples import sample
from mmengine.logging import MMLogger

from detkit.datasets import CocoDataset
from detkit.evaluation import CocoMetric

# Three 100x100 images with one 40x40 (medium) cat each.
BOXES = {1: [10, 10, 40, 40], 2: [20, 30, 40, 40], 3: [50, 50, 40, 40]}
# Perfect predictions on image 1 only, scored against all three images:
# precision 1 up to recall 1/3, i.e. 34 of the 101 recall points
# (0, 0.01, ..., 0.33), at every IoU threshold.
AP_ONE_OF_THREE = 34 / 101  # 0.3366


@pytest.fixture
def log_messages():
    messages = []
    handler = logging.Handler()
    handler.emit = lambda record: messages.append(
        (record.levelname, record.getMessage()))
    logger = MMLogger.get_current_instance()
    logger.addHandler(handler)
    yield messages
    logger.removeHandler(handler)


def _ann_file(tmp_path, annotations=True, ids=(1, 2, 3)):
    coco = dict(
        images=[dict(id=i, file_name=f'{i}.jpg', width=100, height=100)
                for i in ids],
        annotations=[dict(id=i, image_id=i, category_id=1, bbox=BOXES[i],
                          area=1600, iscrowd=0) for i in (1, 2, 3)
                     if annotations],
        categories=[dict(id=1, name='cat')])
    path = tmp_path / 'val.json'
    path.write_text(json.dumps(coco))
    return str(path)


def _prediction(img_id, xywh_boxes):
    boxes = [[x, y, x + w, y + h] for x, y, w, h in xywh_boxes]
    return dict(img_id=img_id, ori_shape=(100, 100),
                pred_instances=dict(
                    bboxes=torch.tensor(boxes, dtype=torch.float32).reshape(
                        -1, 4),
                    scores=torch.ones(len(boxes)),
                    labels=torch.zeros(len(boxes), dtype=torch.long)))


def _evaluate(metric, samples, classes=('cat', )):
    metric.dataset_meta = dict(classes=classes)
    metric.process({}, samples)
    return metric.evaluate(size=len(samples))


def test_subset_is_scored_on_its_images(tmp_path, log_messages):
    path = _ann_file(tmp_path)
    samples = [_prediction(1, [BOXES[1]])]
    results = _evaluate(CocoMetric(ann_file=path), samples)
    assert results['coco/bbox_mAP'] == 1.0
    assert results['coco/bbox_mAP_m'] == 1.0
    assert ('INFO', f'CocoMetric: evaluating 1 of the 3 images of {path} '
            '(the images that were predicted; eval_all_images=True scores '
            'all of them, as mmdetection does)') in log_messages
    # mmdetection's behaviour: the two unpredicted cats count as missed.
    log_messages.clear()
    metric = CocoMetric(ann_file=path, eval_all_images=True)
    results = _evaluate(metric, samples)
    assert results['coco/bbox_mAP'] == round(AP_ONE_OF_THREE, 3)  # 0.337
    assert ('INFO', f'CocoMetric: evaluating all 3 images of {path} (1 of '
            'them predicted; eval_all_images=True)') in log_messages


def test_the_evaluator_stays_accessible(tmp_path):
    metric = CocoMetric(ann_file=_ann_file(tmp_path), eval_all_images=True)
    _evaluate(metric, [_prediction(1, [BOXES[1]])])
    evaluator = metric.coco_evals['bbox']
    assert metric.last_coco_eval is evaluator
    assert evaluator.params.imgIds == [1, 2, 3]
    # precision: (IoU thresholds, recall points, classes, areas, maxDets)
    precision = evaluator.eval['precision']
    assert precision.shape == (10, 101, 1, 4, 3)
    # (pycocotools divides by tp + fp + eps, hence approx)
    assert precision[0, :34, 0, 0, -1] == pytest.approx([1.0] * 34)
    assert (precision[0, 34:, 0, 0, -1] == 0).all()
    assert metric.coco_stats['bbox'][0] == pytest.approx(AP_ONE_OF_THREE)


def test_proposal_fast_follows_the_same_images(tmp_path):
    path = _ann_file(tmp_path)
    samples = [_prediction(1, [BOXES[1]])]
    subset = _evaluate(CocoMetric(ann_file=path, metric='proposal_fast',
                                  proposal_nums=(1, 10)), samples)
    assert subset == {'coco/AR@1': 1.0, 'coco/AR@10': 1.0}
    every = _evaluate(CocoMetric(ann_file=path, metric='proposal_fast',
                                 proposal_nums=(1, 10),
                                 eval_all_images=True), samples)
    assert every == {'coco/AR@1': pytest.approx(1 / 3),
                     'coco/AR@10': pytest.approx(1 / 3)}


def test_an_image_collected_twice_is_scored_once(tmp_path, log_messages):
    # E.g. gathered twice from distributed ranks: the second copy of the
    # detection would otherwise be a false positive.
    path = _ann_file(tmp_path)
    samples = [_prediction(1, [BOXES[1]]), _prediction(2, [BOXES[2]]),
               _prediction(1, [BOXES[1]])]
    results = _evaluate(CocoMetric(ann_file=path), samples)
    assert results['coco/bbox_mAP'] == 1.0
    assert ('WARNING', 'CocoMetric: 1 results repeat an image already '
            'predicted (same img_id); each image is evaluated once.'
            ) in log_messages
    assert ('INFO', f'CocoMetric: evaluating 2 of the 3 images of {path} '
            '(the images that were predicted; eval_all_images=True scores '
            'all of them, as mmdetection does)') in log_messages


def test_a_file_without_annotations_is_said_so(tmp_path, log_messages):
    path = _ann_file(tmp_path, annotations=False)
    results = _evaluate(CocoMetric(ann_file=path),
                        [_prediction(1, [BOXES[1]])])
    assert results['coco/bbox_mAP'] == -1.0
    assert ('WARNING', f'CocoMetric: {path} has no annotations for the 1 '
            'evaluated images, so every AP and AR below is -1 (undefined: '
            'there is nothing to detect), not a score. Point ann_file to the '
            'labeled annotations, or, for an unlabeled file (e.g. from '
            'images2coco.py), set format_only=True and outfile_prefix to '
            'save the predictions instead.') in log_messages


def test_predicted_images_missing_from_the_file_are_refused(tmp_path):
    metric = CocoMetric(ann_file=_ann_file(tmp_path))
    with pytest.raises(ValueError) as err:
        _evaluate(metric, [_prediction(5, [BOXES[1]])])
    assert str(err.value).startswith(
        'CocoMetric: 1 predicted images are not in ann_file '
        f"{tmp_path / 'val.json'} (image ids [5]): the evaluator's ann_file "
        'must be the annotation file of the dataset that was run')


def test_string_image_ids_are_refused_when_the_metric_is_built(tmp_path):
    path = _ann_file(tmp_path, annotations=False, ids=(1, 'b', 3))
    with pytest.raises(ValueError) as err:
        CocoMetric(ann_file=path)
    assert str(err.value) == (
        f'CocoMetric: ann_file {path} has 1 image ids that are not integers '
        "(e.g. 'b', a str); COCO evaluation needs integer image ids. "
        'Renumber the images with integers (and the image_id of their '
        'annotations), e.g. with python tools/misc/check_dataset.py CONFIG '
        '--split val --fix OUT.json.')
    # Only writing results (format_only) does not need integer ids.
    assert CocoMetric(ann_file=path, format_only=True,
                      outfile_prefix=str(tmp_path / 'out')).format_only


@pytest.mark.parametrize('backend', ['pycocotools', 'faster-coco-eval'])
def test_string_ids_of_samples_are_renumbered(backend):
    if backend == 'faster-coco-eval':
        pytest.importorskip('faster_coco_eval')  # an optional package
    # Ground truth from the samples (no ann_file), VOC-style string ids
    # (faster-coco-eval casts ids to int). Two copies of the hand example
    # of eval_samples.py have its precision-recall envelope: at each
    # recall the precision is the same, so mAP stays 0.637.
    results = _evaluate(CocoMetric(backend=backend),
                        [sample(img_id='000001'), sample(img_id='000002')])
    assert results['coco/bbox_mAP'] == 0.637
    assert results['coco/bbox_mAP_50'] == 0.835


def test_missing_ann_file_names_the_evaluator_key_and_the_fix(tmp_path):
    (tmp_path / 'bccd').mkdir()
    (tmp_path / 'bccd' / 'val.json').write_text('{}')
    data_root = str(tmp_path / 'bccd')  # no trailing slash
    with pytest.raises(FileNotFoundError) as err:
        CocoMetric(ann_file=data_root + 'val.json')
    assert str(err.value) == (
        f"CocoMetric: ann_file '{data_root}val.json' (val_evaluator.ann_file"
        ' or test_evaluator.ann_file in the config) does not exist; '
        f"'{data_root}/val.json' does: a folder path lost its trailing slash"
        f" when joined. Write it as '{data_root}/' (e.g. data_root = "
        f"'{data_root}/') or join with os.path.join.")


def test_bccd_perfect_predictions_on_four_images(bccd_dir, log_messages):
    classes = ('RBC', 'WBC', 'Platelets')
    dataset = CocoDataset(
        data_root=bccd_dir, ann_file='val.json', test_mode=True, indices=4,
        data_prefix=dict(img='images/'), metainfo=dict(classes=classes),
        pipeline=[dict(type='LoadAnnotations')])
    samples = []
    for i in range(len(dataset)):
        data = dataset[i]
        boxes = torch.as_tensor(data['gt_bboxes'])
        samples.append(dict(
            img_id=data['img_id'], ori_shape=(480, 640),
            pred_instances=dict(
                bboxes=boxes, scores=torch.ones(len(boxes)),
                labels=torch.as_tensor(data['gt_bboxes_labels']))))
    ann_file = f'{bccd_dir}/val.json'
    results = _evaluate(CocoMetric(ann_file=ann_file), samples, classes)
    assert results['coco/bbox_mAP'] == 1.0
    assert results['coco/bbox_mAP_50'] == 1.0
    assert ('INFO', f'CocoMetric: evaluating 4 of the 72 images of '
            f'{ann_file} (the images that were predicted; eval_all_images='
            'True scores all of them, as mmdetection does)') in log_messages
    # mmdetection's behaviour: the objects of the other 68 images are
    # missed, and the perfect predictions score 0.063.
    every = _evaluate(CocoMetric(ann_file=ann_file, eval_all_images=True),
                      samples, classes)
    assert every['coco/bbox_mAP'] == 0.063
