"""demo/image_demo.py and demo/video_demo.py on the tiny detector."""
import json
import os.path as osp
import sys

import cv2
import pytest

from conftest import REPO_ROOT

sys.path.insert(0, osp.join(REPO_ROOT, 'tests', 'test_tools'))
from toolbox_toys import run_tool, tiny_setup  # noqa: E402,F401

from detkit.apis import DetInferencer  # noqa: E402


def test_image_demo_on_a_glob_prints_and_saves(tiny_setup, tmp_path,  # noqa
                                               capsys):
    demo = run_tool('demo', 'image_demo.py')
    out_dir = str(tmp_path / 'out')
    pattern = osp.join(tiny_setup['img_dir'], 'val_00000[01].png')
    result = demo['main']([
        pattern, tiny_setup['cfg_file'], '--weights', tiny_setup['ckpt'],
        '--out-dir', out_dir, '--pred-score-thr', '0.5', '--batch-size', '2',
        '--classes', 'square'
    ])
    printed = capsys.readouterr().out
    assert sum(len(pred['scores']) for pred in result['predictions']) > 0
    for name, pred in zip(['val_000000', 'val_000001'],
                          result['predictions']):
        assert set(pred['label_names']) <= {'square'}
        assert all(score >= 0.5 for score in pred['scores'])
        count = len(pred['scores'])
        assert f'{name}.png: {count} detections with score >= 0.5' in printed
        assert printed.count('  square ') >= count
        with open(osp.join(out_dir, 'preds', name + '.json')) as f:
            assert json.load(f) == pred
        assert cv2.imread(osp.join(out_dir, 'vis',
                                   name + '.png')).shape == (64, 64, 3)
    assert f'annotated pictures: {osp.join(out_dir, "vis")}' in printed

    with pytest.raises(SystemExit, match='matches no image'):
        demo['main']([str(tmp_path / '*.jpg'), tiny_setup['cfg_file']])


def test_video_demo_writes_every_nth_frame(tiny_setup, tmp_path):  # noqa
    frames = [
        cv2.imread(osp.join(tiny_setup['img_dir'], f'train_00000{i}.png'))
        for i in range(4)
    ]
    video = str(tmp_path / 'in.avi')
    writer = cv2.VideoWriter(video, cv2.VideoWriter_fourcc(*'MJPG'), 10,
                             (64, 64))
    assert writer.isOpened()
    for i in range(8):
        writer.write(frames[i % 4])
    writer.release()

    out = str(tmp_path / 'out' / 'det.mp4')
    demo = run_tool('demo', 'video_demo.py')
    results = demo['main']([video, tiny_setup['cfg_file'], '--weights',
                            tiny_setup['ckpt'], '--out', out,
                            '--frame-stride', '3', '--pred-score-thr', '0.5'])
    assert [r['frame'] for r in results] == [0, 3, 6]

    written = cv2.VideoCapture(out)
    assert int(written.get(cv2.CAP_PROP_FRAME_COUNT)) == 3
    assert written.get(cv2.CAP_PROP_FPS) == pytest.approx(10 / 3, abs=0.01)
    assert (written.get(cv2.CAP_PROP_FRAME_WIDTH),
            written.get(cv2.CAP_PROP_FRAME_HEIGHT)) == (64, 64)
    ok, first = written.read()
    assert ok and first.shape == (64, 64, 3)
    written.release()

    # The detections are the inferencer's on the decoded input frames.
    capture = cv2.VideoCapture(video)
    decoded = [capture.read()[1] for _ in range(8)]
    capture.release()
    inferencer = DetInferencer(tiny_setup['cfg_file'], tiny_setup['ckpt'],
                               device='cpu', show_progress=False)
    expected = inferencer([decoded[i] for i in (0, 3, 6)],
                          pred_score_thr=0.5)['predictions']
    for got, want in zip(results, expected):
        assert {k: v for k, v in got.items() if k != 'frame'} == want
