"""Annotation files with problems: each is a clear error naming the file
and the image or annotation, or a documented fix-up counted in one log
line, never a crash inside the model.

Covered in tests/test_datasets/test_coco_dataset.py: zero-area and w < 1
boxes, boxes outside the image and partly outside, unknown category ids
(test_parsing_rules); missing width, duplicate image and annotation ids,
non-numeric and short bboxes, a missing "categories" list, classes absent
from the file (test_bad_annotation_files); invalid JSON
(test_missing_and_invalid_files). The cases below complete the list.
"""
import json
import logging

import pytest
from mmengine.logging import MMLogger

from detkit.datasets import CocoDataset


def _coco(**image):
    return dict(
        images=[dict(dict(id=7, file_name='a.jpg', width=40, height=30),
                     **image)],
        annotations=[dict(id=1, image_id=7, category_id=1,
                          bbox=[1, 2, 10, 20], area=200, iscrowd=0)],
        categories=[dict(id=1, name='cat'), dict(id=2, name='dog')])


def _load(tmp_path, coco):
    (tmp_path / 'ann.json').write_text(json.dumps(coco))
    return CocoDataset(ann_file='ann.json', data_root=str(tmp_path),
                       metainfo=dict(classes=('cat', 'dog')))


@pytest.fixture
def log_messages():
    messages = []
    handler = logging.Handler()
    handler.emit = lambda record: messages.append(record.getMessage())
    logger = MMLogger.get_current_instance()
    logger.addHandler(handler)
    yield messages
    logger.removeHandler(handler)


@pytest.mark.parametrize('image, message', [
    (dict(height=None), r'image id=7 \(a.jpg\) has height=None'),
    (dict(width='640'), r"image id=7 \(a.jpg\) has width='640'"),
    (dict(width=0), r'image id=7 \(a.jpg\) has width=0'),
    (dict(width=float('nan')), r'image id=7 \(a.jpg\) has width=nan'),
])
def test_bad_image_sizes_are_errors(tmp_path, image, message):
    with pytest.raises(ValueError, match='ann.json: ' + message):
        _load(tmp_path, _coco(**image))


@pytest.mark.parametrize('bbox', [[1, 2, float('nan'), 4],
                                  [1, 2, float('inf'), 4], [1, None, 3, 4],
                                  [1, True, 3, 4], '1,2,3,4'])
def test_non_numeric_boxes_are_errors(tmp_path, bbox):
    coco = _coco()
    coco['annotations'][0]['bbox'] = bbox
    with pytest.raises(ValueError, match=r'ann.json: annotation id=1 '
                       r'\(image id=7\) has bbox=.*; expected four finite '
                       r'numbers \[x, y, w, h\]'):
        _load(tmp_path, coco)


def test_negative_sizes_and_foreign_ids_are_skipped_and_counted(
        tmp_path, log_messages):
    coco = _coco()
    ann = coco['annotations'][0]
    coco['annotations'] += [
        dict(ann, id=2, bbox=[30, 5, -10, 8]),  # negative width
        dict(ann, id=3, bbox=[5, 25, 6, -20]),  # negative height
        dict(ann, id=4, category_id=3),  # id not in "categories"
        dict(ann, id=5, category_id='1'),  # a string is not the id 1
        dict(ann, id=6, image_id=99),  # image not in "images"
        dict(ann, id=7, area=-1),  # negative area
    ]
    dataset = _load(tmp_path, coco)
    assert dataset.get_data_info(0)['instances'] == [
        dict(bbox=[1, 2, 11, 22], bbox_label=0, ignore_flag=0)]
    assert [m for m in log_messages if 'annotations' in m] == [
        f'{tmp_path}/ann.json: skipped 6 of 7 annotations (1 area <= 0, '
        '2 w < 1 or h < 1, 2 category not in classes, 1 with an image_id '
        'not in "images")']
