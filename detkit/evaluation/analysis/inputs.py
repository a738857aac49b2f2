"""What every result analysis reads: one image's predictions and the test
set's ground truth, as numpy arrays.

A result is one entry of a ``tools/test.py --out`` file (mmengine's
``DumpResults``: a dict per image with ``img_id``, ``img_path``,
``pred_instances`` ``bboxes (K, 4)`` xyxy original-image pixels, ``scores
(K,)``, ``labels (K,)``), or the same dict collected in memory by
:class:`~detkit.evaluation.analysis.ResultsCollector`. Ground truth comes
from the dataset's annotations (original pixels), never from the test
pipeline, so that every tool sees the same boxes.
"""
import numpy as np
import torch


def as_array(value, shape=None):
    """``value`` (tensor, array or list) as a numpy array, optionally
    reshaped (``(-1, 4)`` keeps an empty box list two-dimensional)."""
    if isinstance(value, torch.Tensor):
        value = value.detach().cpu().numpy()
    value = np.asarray(value)
    return value if shape is None else value.reshape(shape)


def predictions(result):
    """``(bboxes (K, 4), scores (K,), labels (K,))`` float64 / float64 /
    int64 numpy arrays of one result."""
    pred = result['pred_instances']
    return (as_array(pred['bboxes'], (-1, 4)).astype(np.float64),
            as_array(pred['scores'], -1).astype(np.float64),
            as_array(pred['labels'], -1).astype(np.int64))


def ground_truth(dataset):
    """``{img_id: dict(img_path, bboxes (G, 4), labels (G,), ignore (G,)
    bool)}`` from the dataset's annotations (original pixels, xyxy)."""
    truth = {}
    for idx in range(len(dataset)):
        info = dataset.get_data_info(idx)
        instances = info.get('instances', [])
        truth[info['img_id']] = dict(
            img_path=info['img_path'],
            bboxes=np.array([i['bbox'] for i in instances],
                            dtype=np.float64).reshape(-1, 4),
            labels=np.array([i['bbox_label'] for i in instances],
                            dtype=np.int64),
            ignore=np.array([i.get('ignore_flag', 0) for i in instances],
                            dtype=bool))
    return truth


def match_results(results, truth, path='the results file'):
    """Pairs ``(result, its ground truth)``, matched by ``img_id``, in the
    order of ``results``."""
    missing = [r['img_id'] for r in results if r['img_id'] not in truth]
    if missing:
        raise KeyError(f'{path}: images {missing[:5]} are not in the '
                       'config\'s test dataset; use the config the results '
                       'were made with')
    return [(r, truth[r['img_id']]) for r in results]
