"""DetInferencer: inputs of every kind, batching, outputs, filtering."""
import json
import os
import os.path as osp
import sys

import cv2
import numpy as np
import pytest

from conftest import REPO_ROOT

sys.path.insert(0, osp.join(REPO_ROOT, 'tests', 'test_tools'))
from toolbox_toys import tiny_setup  # noqa: E402,F401

from detkit.apis import (DetInferencer, inference_detector,  # noqa: E402
                         init_detector)
from detkit.apis.det_inferencer import (collect_inputs,  # noqa: E402
                                        resolve_config)
from detkit.datasets.synthetic_shapes import SHAPES_CLASSES  # noqa: E402
from detkit.structures import DetDataSample  # noqa: E402


@pytest.fixture(scope='module')
def inferencer(tiny_setup):  # noqa: F811
    return DetInferencer(tiny_setup['cfg_file'], weights=tiny_setup['ckpt'],
                         device='cpu', show_progress=False)


def _val_images(setup):
    return [osp.join(setup['img_dir'], f'val_00000{i}.png') for i in range(3)]


def _assert_same(pred, ref):
    """Two prediction dicts: labels and names equal, numbers to 1e-5."""
    assert pred['labels'] == ref['labels']
    assert pred['label_names'] == ref['label_names']
    np.testing.assert_allclose(pred['bboxes'], ref['bboxes'], atol=1e-4)
    np.testing.assert_allclose(pred['scores'], ref['scores'], atol=1e-6)


def test_predictions_match_the_model_for_every_input_kind(
        inferencer, tiny_setup, tmp_path):  # noqa: F811
    images = _val_images(tiny_setup)
    model = init_detector(tiny_setup['cfg_file'], tiny_setup['ckpt'])
    reference = []
    for sample in inference_detector(model, images):
        pred = sample.pred_instances
        reference.append(dict(
            bboxes=pred.bboxes.tolist(), scores=pred.scores.tolist(),
            labels=pred.labels.tolist(),
            label_names=[SHAPES_CLASSES[i] for i in pred.labels.tolist()]))
    assert all(len(ref['scores']) == 10 for ref in reference)  # max_per_img

    out_dir = str(tmp_path / 'out')
    by_glob = inferencer(osp.join(tiny_setup['img_dir'], 'val_*.png'),
                         batch_size=2, pred_score_thr=0, out_dir=out_dir)
    assert by_glob['visualization'] == []
    for pred, ref in zip(by_glob['predictions'], reference):
        _assert_same(pred, ref)
    # One JSON per image equal to what was returned, one picture per image
    # at the image's size.
    for name, pred in zip(['val_000000', 'val_000001', 'val_000002'],
                          by_glob['predictions']):
        with open(osp.join(out_dir, 'preds', name + '.json')) as f:
            saved = json.load(f)
        assert set(saved) == {'bboxes', 'scores', 'labels', 'label_names'}
        assert saved == pred
        picture = cv2.imread(osp.join(out_dir, 'vis', name + '.png'))
        assert picture.shape == (64, 64, 3)

    # Arrays (BGR, as cv2 reads them), paths and nested lists mix freely.
    mixed = inferencer([cv2.imread(images[0]), [images[1]]], batch_size=2,
                       pred_score_thr=0)
    for pred, ref in zip(mixed['predictions'], reference):
        _assert_same(pred, ref)
    folder = tmp_path / 'folder'
    folder.mkdir()
    for name in ('b.png', 'a.png'):
        os.symlink(images[2 if name == 'a.png' else 0], folder / name)
    (folder / 'readme.txt').write_text('not an image')
    by_folder = inferencer(str(folder), pred_score_thr=0)['predictions']
    assert len(by_folder) == 2  # sorted: a.png (= val 2), b.png (= val 0)
    _assert_same(by_folder[0], reference[2])
    _assert_same(by_folder[1], reference[0])


def test_score_threshold_and_class_filter(inferencer, tiny_setup):  # noqa
    images = _val_images(tiny_setup)[:2]
    everything = inferencer(images, pred_score_thr=0)['predictions']
    scores = np.concatenate([p['scores'] for p in everything])
    thr = float(np.median(scores))
    kept = inferencer(images, pred_score_thr=thr)['predictions']
    wanted = {1, 4}
    by_class = inferencer(images, pred_score_thr=0,
                          classes=['square', 4])['predictions']
    for full, above, only in zip(everything, kept, by_class):
        keep = [i for i, s in enumerate(full['scores']) if s >= thr]
        assert above['scores'] == [full['scores'][i] for i in keep]
        assert above['bboxes'] == [full['bboxes'][i] for i in keep]
        keep = [i for i, label in enumerate(full['labels']) if label in wanted]
        assert only['labels'] == [full['labels'][i] for i in keep]
        assert set(only['label_names']) <= {'square', 'cross'}
    assert any(only['labels'] for only in by_class)
    total_above = sum(len(p['scores']) for p in kept)
    assert total_above == int((scores >= thr).sum())
    with pytest.raises(ValueError, match="unknown class 'dog'.*circle"):
        inferencer(images, classes=['dog'])


def test_config_from_checkpoint_and_by_name(inferencer, tiny_setup):  # noqa
    from_ckpt = DetInferencer(weights=tiny_setup['ckpt'], device='cpu',
                              show_progress=False)
    assert from_ckpt.classes == SHAPES_CLASSES
    image = _val_images(tiny_setup)[0]
    out = from_ckpt(image, pred_score_thr=0, return_vis=True,
                    return_datasamples=True)
    sample = out['predictions'][0]
    assert isinstance(sample, DetDataSample)
    expected = inferencer(image, pred_score_thr=0)['predictions'][0]
    assert sample.pred_instances.labels.tolist() == expected['labels']
    assert out['visualization'][0].shape == (64, 64, 3)

    cfg = resolve_config('retinanet_r50_fpn_1x_coco')
    assert cfg.model.type == 'RetinaNet'
    assert cfg.model.bbox_head.num_classes == 80
    with pytest.raises(FileNotFoundError,
                       match='Did you mean retinanet_r50_fpn_1x_coco'):
        resolve_config('retinanet_r50_fpn_1x_cooc')


def test_collect_inputs_names_and_errors(tmp_path):
    (tmp_path / 'a').mkdir()
    (tmp_path / 'b').mkdir()
    for folder in ('a', 'b'):
        cv2.imwrite(str(tmp_path / folder / 'x.png'),
                    np.zeros((4, 4, 3), np.uint8))
    (tmp_path / 'a' / 'notes.txt').write_text('not an image')
    items = collect_inputs([str(tmp_path / '*' / '*'),
                            np.zeros((5, 6, 3), np.uint8)])
    assert [name for name, _ in items] == ['x.png', 'x_1.png',
                                           '00000002.jpg']
    assert items[1][1] == str(tmp_path / 'b' / 'x.png')
    with pytest.raises(FileNotFoundError, match='matches no image'):
        collect_inputs(str(tmp_path / '*.jpg'))
    with pytest.raises(FileNotFoundError, match='not a file, a folder'):
        collect_inputs(str(tmp_path / 'missing.png'))
    with pytest.raises(ValueError, match=r'shape \(4, 4, 4\)'):
        collect_inputs(np.zeros((4, 4, 4), np.uint8))
    os.remove(tmp_path / 'a' / 'x.png')
    with pytest.raises(FileNotFoundError, match='no image'):
        collect_inputs(str(tmp_path / 'a'))
