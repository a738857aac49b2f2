"""Dataset problems that used to crash late or hang: an empty annotation
list, every image filtered, string image ids, a FIFO named .jpg, a data_root
without its trailing slash; and the collecting audit check_dataset.py
reads."""
import json
import os
import subprocess
import sys
import textwrap

import cv2
import numpy as np
import pytest

from detkit.datasets import CocoDataset
from detkit.datasets.base_det_dataset import AnnotationAudit
from detkit.datasets.coco import missing_path_hint

CLASSES = ('cat', 'dog')


def _write_coco(root, images, annotations, name='ann.json'):
    coco = dict(images=images, annotations=annotations,
                categories=[dict(id=1, name='cat'), dict(id=2, name='dog')])
    (root / name).write_text(json.dumps(coco))
    return str(root / name)


def _images(n, ids=None):
    ids = ids or list(range(1, n + 1))
    return [dict(id=i, file_name=f'{k}.png', width=32, height=24)
            for k, i in enumerate(ids)]


def _dataset(root, **kwargs):
    return CocoDataset(ann_file='ann.json', data_root=str(root),
                       metainfo=dict(classes=CLASSES), **kwargs)


def test_empty_annotations_list_fails_naming_file_and_filter(tmp_path):
    path = _write_coco(tmp_path, _images(3), [])
    with pytest.raises(ValueError) as err:
        _dataset(tmp_path, filter_cfg=dict(filter_empty_gt=True))
    assert str(err.value) == (
        f'CocoDataset ({path}): all 3 images were filtered out, nothing is '
        'left to train on: 3 have no non-ignored box '
        '(filter_cfg.filter_empty_gt=True) and 0 a side below '
        'filter_cfg.min_size=0. The file gives 0 usable boxes in all (its '
        'annotations list is empty or every annotation was skipped: is it '
        'an unlabeled file, e.g. from images2coco.py?). Point ann_file to '
        'the labeled annotations, or set filter_cfg=dict(filter_empty_gt='
        'False) to train on images without boxes (as background only).')
    # The way out it names works; test datasets are never filtered.
    assert len(_dataset(tmp_path, filter_cfg=dict(filter_empty_gt=False))) \
        == 3
    assert len(_dataset(tmp_path, test_mode=True)) == 3


def test_every_image_below_min_size_fails_too(tmp_path):
    _write_coco(tmp_path, _images(2), [
        dict(id=1, image_id=1, category_id=1, bbox=[1, 1, 5, 5], area=25)])
    with pytest.raises(ValueError, match=(
            r'all 2 images were filtered out, nothing is left to train on: '
            r'1 have no non-ignored box \(filter_cfg.filter_empty_gt=True\) '
            r'and 1 a side below filter_cfg.min_size=32. The file gives 1 '
            r'usable boxes in all. Point')):
        _dataset(tmp_path, filter_cfg=dict(filter_empty_gt=True,
                                           min_size=32))


def test_a_file_without_images_fails_at_load(tmp_path):
    path = _write_coco(tmp_path, [], [])
    with pytest.raises(ValueError, match=(
            f'CocoDataset: {path} lists no images, so there is nothing to '
            'train or test on. Check ann_file and data_root.')):
        _dataset(tmp_path, test_mode=True)


def test_string_image_ids_fail_at_load_in_test_mode(tmp_path):
    images = _images(2, ids=['a1', 2])
    _write_coco(tmp_path, images, [
        dict(id=1, image_id='a1', category_id=1, bbox=[1, 1, 5, 5],
             area=25)])
    with pytest.raises(ValueError) as err:
        _dataset(tmp_path, test_mode=True)
    assert str(err.value).startswith(
        f"{tmp_path / 'ann.json'}: image id='a1' (0.png) is a str, but COCO "
        'evaluation (CocoMetric, pycocotools) needs integer image ids. '
        'Renumber the images with integers (and the image_id of their '
        'annotations), e.g. with python tools/misc/check_dataset.py CONFIG '
        '--split val --fix OUT.json.')
    # Training does not evaluate: the same file trains.
    train = _dataset(tmp_path)
    assert [train.get_data_info(i)['img_id'] for i in range(len(train))] \
        == ['a1', 2]
    assert train.audit.counts['image_id_not_int'] == 1


def test_missing_annotation_file_names_the_lost_slash(tmp_path):
    (tmp_path / 'bccd').mkdir()
    _write_coco(tmp_path / 'bccd', _images(1), [], name='val.json')
    joined = str(tmp_path / 'bccd') + 'val.json'  # data_root + 'val.json'
    expected = (f"; {str(tmp_path / 'bccd' / 'val.json')!r} does: a folder "
                'path lost its trailing slash when joined. Write it as '
                f"{str(tmp_path / 'bccd') + '/'!r} (e.g. data_root = "
                f"{str(tmp_path / 'bccd') + '/'!r}) or join with "
                'os.path.join')
    assert missing_path_hint(joined) == expected
    assert missing_path_hint(str(tmp_path / 'bccd' / 'val.json')) == ''
    assert missing_path_hint(str(tmp_path / 'nothing' / 'val.json')) == ''
    with pytest.raises(FileNotFoundError) as err:
        CocoDataset(ann_file=joined, metainfo=dict(classes=CLASSES))
    assert str(err.value) == (
        f'CocoDataset: annotation file {joined} does not exist (ann_file is '
        f"joined to data_root ''){expected}.")


def test_fifo_named_jpg_is_refused_not_waited_on(tmp_path):
    """open() on a FIFO blocks until a writer comes: run the load in a
    subprocess with a timeout, so a regression fails instead of hanging."""
    cv2.imwrite(str(tmp_path / '0.png'), np.zeros((24, 32, 3), np.uint8))
    os.mkfifo(tmp_path / '1.png')
    _write_coco(tmp_path, _images(2), [
        dict(id=i, image_id=i, category_id=1, bbox=[1, 1, 5, 5], area=25)
        for i in (1, 2)])
    script = textwrap.dedent(f"""
        from detkit.datasets import CocoDataset
        ds = CocoDataset(ann_file='ann.json', data_root={str(tmp_path)!r},
                         metainfo=dict(classes=('cat', 'dog')),
                         pipeline=[dict(type='LoadImageFromFile')])
        assert ds[0]['img'].shape == (24, 32, 3)
        try:
            ds[1]
        except Exception as err:
            print(type(err).__name__, err)
        skipping = CocoDataset(ann_file='ann.json', skip_broken=True,
                               data_root={str(tmp_path)!r},
                               metainfo=dict(classes=('cat', 'dog')),
                               pipeline=[dict(type='LoadImageFromFile')])
        print('skipped to', skipping[1]['img_path'])
        """)
    result = subprocess.run([sys.executable, '-c', script],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    path = tmp_path / '1.png'
    assert lines[0] == (
        f'DatasetSampleError dataset index 1 (image {path}): '
        f'BrokenImageError: cannot load image {path}: not a regular file but '
        'a FIFO (named pipe); replace it with the image file. Fix or remove '
        'the file, or set skip_broken=True in the training dataset config '
        'to skip unreadable images.')
    assert lines[1].endswith(
        f'skipping broken image at dataset index 1 ({path}): not a regular '
        'file but a FIFO (named pipe); replace it with the image file')
    assert lines[-1] == f"skipped to {tmp_path / '0.png'}"


def test_collecting_audit_records_every_problem(tmp_path):
    images = _images(4) + [dict(id=2, file_name='dup.png', width=32,
                                height=24),
                           dict(id=9, file_name='nosize.png')]
    annotations = [
        dict(id=1, image_id=1, category_id=1, bbox=[1, 1, 5, 5], area=25),
        dict(id=1, image_id=2, category_id=2, bbox=[1, 1, 5, 5], area=25),
        dict(id=3, image_id=2, category_id=1, bbox=[1, 1, 'x', 5]),
        dict(id=4, image_id=77, category_id=1, bbox=[1, 1, 5, 5]),
        dict(id=5, image_id=3, category_id=1, bbox=[1, 1, 0.5, 5]),
        dict(id=6, image_id=3, category_id=5, bbox=[1, 1, 5, 5]),
        dict(id=7, image_id=4, category_id=1, bbox=[30, 20, 5, 5]),
    ]
    _write_coco(tmp_path, images, annotations)
    with pytest.raises(ValueError, match='image id=2 appears twice'):
        _dataset(tmp_path)  # strict: the first error stops the load
    dataset = _dataset(tmp_path, lazy_init=True)
    dataset.audit = audit = AnnotationAudit(strict=False)
    data_list = dataset.load_data_list()
    assert [info['img_id'] for info in data_list] == [1, 2, 3, 4]
    assert dict(audit.counts) == {
        'duplicate_image_id': 1, 'image_size': 1, 'duplicate_ann_id': 1,
        'bad_bbox': 1, 'orphan': 1, 'small': 1, 'category': 1, 'partial': 1}
    assert audit.records['duplicate_image_id'] == [(
        f"{tmp_path / 'ann.json'}: image id=2 appears twice in \"images\"; "
        'image ids must be unique',
        dict(image_index=4, img_id=2, file_name='dup.png'))]
    assert audit.records['orphan'] == [
        ('', dict(ann_index=3, ann_id=4, img_id=77))]
    assert audit.severity['small'] == 'skip'
    assert audit.severity['partial'] == 'note'
    # Image 2 keeps the duplicated-id annotation, not the broken bbox.
    assert [len(info['instances']) for info in data_list] == [1, 1, 0, 1]
