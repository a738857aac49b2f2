"""CocoMetric's evaluation backends: pycocotools and faster-coco-eval give
the same numbers."""
import importlib.util
import json
import sys

import numpy as np
import pytest
from eval_samples import sample

from detkit.evaluation import CocoMetric

HAS_FASTER = importlib.util.find_spec('faster_coco_eval') is not None
needs_faster = pytest.mark.skipif(
    not HAS_FASTER, reason='faster-coco-eval is not installed (optional: '
    'pip install faster-coco-eval, see requirements/optional.txt)')
# The hand-worked mAP of eval_samples.sample() (test_coco_metric.py).
MAP = (4 * (51 + 50 * 2 / 3) / 101 + 6 * 51 / 101) / 10


def _random_set(tmp_path, num_images=40, seed=0):
    """A json ground truth of 3 classes and noisy predictions."""
    rng = np.random.default_rng(seed)
    images, anns, preds = [], [], []
    for img_id in range(1, num_images + 1):
        images.append(dict(id=img_id, width=200, height=150,
                           file_name=f'{img_id}.jpg'))
        n = int(rng.integers(1, 6))
        wh = rng.uniform(5, 80, (n, 2))
        xy = rng.uniform(0, 1, (n, 2)) * (np.array([200, 150]) - wh)
        labels = rng.integers(0, 3, n)
        for b_xy, b_wh, label in zip(xy, wh, labels):
            anns.append(dict(id=len(anns) + 1, image_id=img_id,
                             bbox=[*map(float, b_xy), *map(float, b_wh)],
                             area=float(b_wh[0] * b_wh[1]),
                             iscrowd=int(rng.uniform() < 0.1),
                             category_id=int(label) + 1))
        boxes = np.hstack([xy, xy + wh]) + rng.normal(0, 4, (n, 4))
        extra = rng.uniform(0, 100, (4, 4))
        extra[:, 2:] += extra[:, :2] + 5
        preds.append(dict(
            img_id=img_id,
            bboxes=np.vstack([boxes, extra]).astype(np.float32),
            scores=rng.uniform(size=n + 4).astype(np.float32),
            labels=np.concatenate([labels, rng.integers(0, 3, 4)])))
    path = tmp_path / 'gt.json'
    path.write_text(json.dumps(dict(
        images=images, annotations=anns,
        categories=[dict(id=i + 1, name=c) for i, c in enumerate('abc')])))
    return str(path), preds


@needs_faster
def test_same_stats_to_4_decimals_on_a_random_set(tmp_path):
    ann_file, preds = _random_set(tmp_path)
    stats, outputs = {}, {}
    for backend in ('pycocotools', 'faster-coco-eval'):
        metric = CocoMetric(ann_file=ann_file, backend=backend,
                            classwise=True)
        metric.dataset_meta = dict(classes=('a', 'b', 'c'))
        outputs[backend] = metric.compute_metrics([(None, p) for p in preds])
        stats[backend] = metric.coco_stats['bbox']
    ref, fast = stats['pycocotools'], stats['faster-coco-eval']
    assert len(ref) == len(fast) == 12
    assert 0.05 < ref[0] < 0.95  # a non-trivial mAP
    assert np.round(ref, 4).tolist() == np.round(fast, 4).tolist()
    assert outputs['pycocotools'] == outputs['faster-coco-eval']


@needs_faster
def test_hand_worked_map_with_faster_coco_eval():
    metric = CocoMetric(backend='faster-coco-eval')
    metric.dataset_meta = dict(classes=('cat', ))
    metric.process({}, [sample()])
    results = metric.evaluate(size=1)
    assert results['coco/bbox_mAP'] == round(MAP, 3)  # 0.637
    assert metric.coco_stats['bbox'][0] == pytest.approx(MAP, abs=1e-6)


def test_unknown_backend_is_refused():
    with pytest.raises(ValueError, match='pycocotools'):
        CocoMetric(backend='cocoapi')


def test_missing_faster_backend_says_how_to_install(monkeypatch):
    # A None entry in sys.modules makes the import fail like a missing
    # package.
    monkeypatch.setitem(sys.modules, 'faster_coco_eval', None)
    with pytest.raises(ImportError, match='pip install faster-coco-eval'):
        CocoMetric(backend='faster-coco-eval')
