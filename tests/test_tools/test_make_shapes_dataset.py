"""tools/misc/make_shapes_dataset.py: arguments reach the generator."""
import importlib.util
import json
import os.path as osp

import cv2
import pytest

REPO = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))


def _tool():
    spec = importlib.util.spec_from_file_location(
        'make_shapes_dataset',
        osp.join(REPO, 'tools', 'misc', 'make_shapes_dataset.py'))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_cli_writes_the_requested_dataset(tmp_path, capsys):
    out = tmp_path / 'shapes'
    paths = _tool().main([
        '--out-dir', str(out), '--num-train', '5', '--num-val', '2',
        '--img-size', '96', '--seed', '3', '--img-format', 'png',
        '--max-objects', '1', '--min-obj-size', '20', '--max-obj-frac', '0.4',
        '--max-rotation', '0'
    ])
    assert paths['data_root'] == str(out)
    printed = capsys.readouterr().out
    assert 'wrote 5 train and 2 val images of 96x96' in printed
    with open(out / 'annotations' / 'train.json') as f:
        train = json.load(f)
    with open(out / 'annotations' / 'val.json') as f:
        val = json.load(f)
    assert [i['file_name'] for i in train['images']] == [
        f'train_00000{i}.png' for i in range(5)
    ]
    assert len(val['images']) == 2 and train['info']['seed'] == 3
    # one shape per image, 20 px to 0.4 * 96 = 38.4 px
    assert len(train['annotations']) == 5
    for ann in train['annotations']:
        assert 10 <= max(ann['bbox'][2:]) <= 39
        if ann['category_id'] == 2:  # an upright square fills its box
            assert ann['area'] == ann['bbox'][2] * ann['bbox'][3]
    img = cv2.imread(str(out / 'images' / 'val_000001.png'))
    assert img.shape == (96, 96, 3)


def test_cli_requires_out_dir():
    with pytest.raises(SystemExit):
        _tool().main(['--num-train', '5'])
