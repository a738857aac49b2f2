"""tools/dataset_converters/images2coco.py: an unlabeled COCO json that
CocoDataset reads."""
import json
import os

import cv2
import numpy as np
import pytest
from mmengine.registry import DefaultScope
from toolbox_toys import run_tool

from detkit.registry import DATASETS


def test_folder_to_coco_and_back(tmp_path):
    img_dir = tmp_path / 'imgs'
    os.makedirs(img_dir / 'sub')
    cv2.imwrite(str(img_dir / 'b.png'), np.zeros((20, 30, 3), np.uint8))
    cv2.imwrite(str(img_dir / 'sub' / 'a.jpg'), np.zeros((10, 12, 3),
                                                         np.uint8))
    cv2.imwrite(str(img_dir / 'skip.bmp'), np.zeros((5, 5, 3), np.uint8))
    (img_dir / 'notes.txt').write_text('no image')
    classes = tmp_path / 'classes.txt'
    classes.write_text('RBC\n\nWBC\nPlatelets\n')
    out = tmp_path / 'ann' / 'unlabeled.json'
    run_tool('tools', 'dataset_converters', 'images2coco.py')['main']([
        str(img_dir), str(classes), str(out), '--exclude-extensions', '.bmp'
    ])
    coco = json.loads(out.read_text())
    assert coco['images'] == [
        dict(id=0, file_name='b.png', height=20, width=30),
        dict(id=1, file_name='sub/a.jpg', height=10, width=12),
    ]
    assert coco['annotations'] == []
    assert [(c['id'], c['name']) for c in coco['categories']] == [
        (0, 'RBC'), (1, 'WBC'), (2, 'Platelets')]

    with DefaultScope.overwrite_default_scope('detkit'):
        dataset = DATASETS.build(dict(
            type='CocoDataset', data_root=str(tmp_path),
            ann_file='ann/unlabeled.json',
            data_prefix=dict(img='imgs/'), test_mode=True,
            metainfo=dict(classes=('RBC', 'WBC', 'Platelets')),
            pipeline=[dict(type='LoadImageFromFile'),
                      dict(type='PackDetInputs')]))
    assert len(dataset) == 2
    assert dataset[1]['inputs'].shape == (3, 10, 12)
    assert dataset.get_data_info(1)['instances'] == []

    twice = tmp_path / 'twice.txt'
    twice.write_text('RBC\nRBC\n')
    with pytest.raises(ValueError, match='twice'):
        run_tool('tools', 'dataset_converters', 'images2coco.py')['main'](
            [str(img_dir), str(twice), str(out)])
