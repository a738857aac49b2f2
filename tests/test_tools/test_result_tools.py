"""tools/test.py --out/--show-dir end to end, then the tools that read its
results file: eval_metric.py, confusion_matrix.py, analyze_results.py."""
import json
import os
import os.path as osp
import pickle

import cv2
import mmengine
import numpy as np
import pytest
import torch
from toolbox_toys import run_tool, tiny_setup, write_cfg  # noqa: F401

from detkit.datasets import CocoDataset
from detkit.datasets.synthetic_shapes import SHAPES_CLASSES
from detkit.visualization import DetLocalVisualizer

TEST = run_tool('tools', 'test.py')
EVAL = run_tool('tools', 'analysis_tools', 'eval_metric.py')
CONFUSION = run_tool('tools', 'analysis_tools', 'confusion_matrix.py')
ANALYZE = run_tool('tools', 'analysis_tools', 'analyze_results.py')
RESULTS_IO = run_tool('tools', 'analysis_tools', 'results_io.py')


def test_test_tool_show_dir_out_and_offline_eval(tiny_setup, tmp_path):  # noqa
    work_dir = str(tmp_path / 'work')
    out = str(tmp_path / 'results.pkl')
    metrics = TEST['main']([
        tiny_setup['cfg_file'], tiny_setup['ckpt'], '--work-dir', work_dir,
        '--out', out, '--show-dir', 'show', '--cfg-options',
        'experiment_name=show_dir_test'
    ])
    assert set(metrics) == {f'coco/bbox_{k}' for k in (
        'mAP', 'mAP_50', 'mAP_75', 'mAP_s', 'mAP_m', 'mAP_l')}

    # --show-dir: one picture per image, ground truth | prediction.
    with open(osp.join(tiny_setup['data_root'], 'annotations',
                       'val.json')) as f:
        coco = json.load(f)
    # They are under <work_dir>/<timestamp>/show.
    found = [osp.join(root, name) for root, _, files in os.walk(work_dir)
             for name in files if osp.basename(root) == 'show']
    assert sorted(osp.basename(p) for p in found) == sorted(
        img['file_name'] for img in coco['images'])
    visualizer = DetLocalVisualizer(name='expected_gt_panel')
    # The dataset keeps CocoDataset's palette for the config's classes.
    visualizer.dataset_meta = dict(classes=SHAPES_CLASSES,
                                   palette=CocoDataset.METAINFO['palette'])
    for path in found:
        picture = cv2.imread(path)[..., ::-1]
        assert picture.shape == (64, 128, 3)
        img = next(i for i in coco['images']
                   if i['file_name'] == osp.basename(path))
        anns = [a for a in coco['annotations'] if a['image_id'] == img['id']]
        boxes = torch.tensor([[x, y, x + w, y + h]
                              for x, y, w, h in (a['bbox'] for a in anns)],
                             dtype=torch.float32)
        original = cv2.imread(osp.join(tiny_setup['img_dir'],
                                       img['file_name']))[..., ::-1]
        left = visualizer.draw_instances(
            original, dict(bboxes=boxes,
                           labels=torch.tensor([a['category_id'] - 1
                                                for a in anns])),
            SHAPES_CLASSES)
        assert np.array_equal(picture[:, :64], left)  # PNG: lossless

    # The results file: one dict per image, read safely, equal to pickle's.
    results = RESULTS_IO['load_results'](out)
    plain = mmengine.load(out)
    assert [r['img_id'] for r in results] == [r['img_id'] for r in plain]
    for safe, unsafe in zip(results, plain):
        for key in ('bboxes', 'scores', 'labels'):
            assert torch.equal(safe['pred_instances'][key],
                               unsafe['pred_instances'][key])
    assert EVAL['main']([tiny_setup['cfg_file'], out]) == metrics


class _Boom:

    def __reduce__(self):
        return (os.system, ('touch ' + _Boom.marker, ))


def test_results_reader_never_runs_code(tmp_path):
    _Boom.marker = str(tmp_path / 'pwned')
    path = tmp_path / 'evil.pkl'
    path.write_bytes(pickle.dumps([dict(pred_instances={}, x=_Boom())],
                                  protocol=2))
    with pytest.raises(ValueError, match='posix.system|os.system'):
        RESULTS_IO['load_results'](str(path))
    assert not osp.exists(_Boom.marker)


def _crafted(tiny_setup, tmp_path):  # noqa: F811
    """A config whose test set is three 64x64 images with hand-made boxes,
    and a results file with hand-made predictions for them."""
    names = ['val_000000.png', 'val_000001.png', 'val_000002.png']
    gts = {0: [([10, 10, 30, 30], 0), ([40, 40, 60, 60], 1)],
           1: [([5, 5, 25, 25], 2)],
           2: [([0, 0, 20, 20], 3)]}
    coco = dict(
        images=[dict(id=i, file_name=n, width=64, height=64)
                for i, n in enumerate(names)],
        annotations=[
            dict(id=10 * i + k, image_id=i, category_id=label + 1,
                 bbox=[x1, y1, x2 - x1, y2 - y1],
                 area=(x2 - x1) * (y2 - y1), iscrowd=0)
            for i, boxes in gts.items()
            for k, ((x1, y1, x2, y2), label) in enumerate(boxes)
        ],
        categories=[dict(id=i + 1, name=n)
                    for i, n in enumerate(SHAPES_CLASSES)])
    ann_file = tmp_path / 'crafted.json'
    ann_file.write_text(json.dumps(coco))
    cfg = dict(tiny_setup['cfg'])
    loader = dict(cfg['test_dataloader'])
    loader['dataset'] = dict(loader['dataset'], ann_file=str(ann_file))
    cfg['test_dataloader'] = loader
    cfg_file = write_cfg(cfg, tmp_path / 'crafted_cfg.py')

    def pred(boxes, scores, labels):
        return dict(bboxes=torch.tensor(boxes, dtype=torch.float32).reshape(
            -1, 4), scores=torch.tensor(scores), labels=torch.tensor(labels))

    results = [
        # found class 0; the class-1 box called class 2 (and class 1 only
        # below 0.3)
        dict(img_id=0, pred_instances=pred(
            [[10, 10, 30, 30], [40, 40, 60, 60], [40, 40, 60, 60]],
            [0.9, 0.8, 0.2], [0, 2, 1])),
        # a background box outranks a match with IoU 400 / 440
        dict(img_id=1, pred_instances=pred(
            [[50, 50, 60, 60], [5, 5, 25, 27]], [0.7, 0.5], [2, 2])),
        dict(img_id=2, pred_instances=pred([], [], [])),  # nothing found
    ]
    pkl = str(tmp_path / 'crafted.pkl')
    mmengine.dump(results, pkl)  # what DumpResults does
    return cfg_file, pkl


def test_confusion_matrix_by_hand(tiny_setup, tmp_path, capsys):  # noqa
    cfg_file, pkl = _crafted(tiny_setup, tmp_path)
    out_dir = tmp_path / 'cm'
    matrix = CONFUSION['main']([cfg_file, pkl, str(out_dir)])
    expected = np.zeros((6, 6), dtype=np.int64)
    expected[0, 0] = 1  # image 0, class 0 found
    expected[1, 2] = 1  # image 0, class-1 box predicted as class 2
    expected[1, 5] = 1  # ... so class 1 is never found (0.2 < 0.3)
    expected[5, 2] = 1  # image 1, a box on background
    expected[2, 2] = 1  # image 1, IoU 0.91 match
    expected[3, 5] = 1  # image 2, missed
    assert np.array_equal(matrix, expected)
    with open(out_dir / 'confusion_matrix.json') as f:
        saved = json.load(f)
    assert saved['matrix'] == expected.tolist()
    assert saved['classes'] == list(SHAPES_CLASSES) + ['background']
    picture = cv2.imread(str(out_dir / 'confusion_matrix.png'))
    assert picture is not None and picture.shape[2] == 3
    # With score 0.2 allowed, class 1 is found on image 0.
    matrix = CONFUSION['main']([cfg_file, pkl, str(out_dir),
                                '--score-thr', '0.1'])
    assert matrix[1, 1] == 1 and matrix[1, 5] == 0


def test_analyze_results_ranks_by_image_ap(tiny_setup, tmp_path):  # noqa
    cfg_file, pkl = _crafted(tiny_setup, tmp_path)
    out_dir = tmp_path / 'analysis'
    ranked = ANALYZE['main']([cfg_file, pkl, str(out_dir), '--topk', '2'])
    # Image 1: precision 1/2 at recall 1 for the 9 IoU thresholds 0.5 ...
    # 0.9 that 400 / 440 = 0.909 passes, 0 at 0.95.
    ap_1 = 0.5 * 9 / 10
    names = [osp.basename(p) for p, _ in ranked['good']]
    assert names == ['val_000000.png', 'val_000001.png']
    assert [ap for _, ap in ranked['good']] == pytest.approx([1.0, ap_1])
    assert [osp.basename(p) for p, _ in ranked['bad']] == [
        'val_000002.png', 'val_000001.png']
    assert ranked['bad'][0][1] == 0.0
    assert sorted(os.listdir(out_dir / 'good')) == [
        'val_000000_1.0.png', 'val_000001_0.45.png']
    assert sorted(os.listdir(out_dir / 'bad')) == [
        'val_000001_0.45.png', 'val_000002_0.0.png']
    picture = cv2.imread(str(out_dir / 'good' / 'val_000000_1.0.png'))
    assert picture.shape == (64, 128, 3)  # ground truth | prediction
