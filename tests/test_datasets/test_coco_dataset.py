"""CocoDataset: parsing rules, class matching by name, filtering, errors,
broken images, and the real BCCD files."""
import json
import logging
import os.path as osp
from collections import Counter

import cv2
import numpy as np
import pytest
import torch
from mmengine.logging import MMLogger

from detkit.datasets import CocoDataset, DatasetSampleError
from detkit.registry import DATASETS

CLASSES = ('cat', 'dog', 'bird')


@pytest.fixture
def log_messages():
    """Messages sent to mmengine's current logger during the test."""
    messages = []
    handler = logging.Handler()
    handler.emit = lambda record: messages.append(record.getMessage())
    logger = MMLogger.get_current_instance()
    logger.addHandler(handler)
    yield messages
    logger.removeHandler(handler)


def _tiny_coco():
    images = [
        dict(id=1, file_name='a.png', width=40, height=30),
        dict(id=2, file_name='b.png', width=20, height=50),
        dict(id=3, file_name='c.png', width=40, height=30),
        dict(id=4, file_name='d.png', width=10, height=10),
        dict(id=5, file_name='e.png', width=40, height=30),
    ]

    def ann(id, image_id, cat, bbox, **extra):
        return dict(id=id, image_id=image_id, category_id=cat, bbox=bbox,
                    area=bbox[2] * bbox[3], iscrowd=0, **extra)

    annotations = [
        ann(1, 1, 1, [1, 2, 10, 20]),
        ann(2, 1, 3, [30, 5, 20, 10]),  # x2 = 50 > 40: kept, partial
        ann(3, 1, 1, [50, 50, 5, 5]),  # no intersection: skipped
        dict(ann(4, 1, 1, [1, 1, 5, 5]), area=0),  # area 0: skipped
        ann(5, 1, 3, [1, 1, 0.5, 5]),  # w < 1: skipped
        ann(6, 1, 99, [1, 1, 5, 5]),  # unknown category: skipped
        dict(ann(7, 1, 7, [2, 2, 4, 4]), iscrowd=1),  # ignore_flag 1
        ann(8, 1, 1, [3, 3, 4, 4], ignore=True),  # skipped
        ann(9, 2, 7, [0, 0, 20, 50]),
        dict(ann(10, 3, 1, [1, 1, 5, 5]), iscrowd=1),
        ann(11, 4, 3, [1, 1, 3, 3]),
    ]
    # category ids are neither contiguous nor sorted
    categories = [dict(id=3, name='dog'), dict(id=1, name='cat'),
                  dict(id=7, name='bird')]
    return dict(images=images, annotations=annotations,
                categories=categories)


def _write(root, coco, name='ann.json'):
    path = osp.join(root, name)
    with open(path, 'w') as f:
        json.dump(coco, f)
    return path


@pytest.fixture
def tiny_root(tmp_path):
    coco = _tiny_coco()
    for img in coco['images']:
        pixels = np.full((img['height'], img['width'], 3), img['id'] * 10,
                         np.uint8)
        cv2.imwrite(str(tmp_path / img['file_name']), pixels)
    _write(str(tmp_path), coco)
    return tmp_path


def _dataset(root, **kwargs):
    kwargs.setdefault('metainfo', dict(classes=CLASSES))
    return CocoDataset(ann_file='ann.json', data_root=str(root),
                       data_prefix=dict(img=''), **kwargs)


def test_parsing_rules(tiny_root, log_messages):
    ds = _dataset(tiny_root)
    assert len(ds) == 5
    # labels follow `classes`, matched by name: cat 0, dog 1, bird 2
    assert ds.cat_ids == [1, 3, 7]
    assert ds.cat2label == {1: 0, 3: 1, 7: 2}
    info = ds.get_data_info(0)
    assert info['img_path'] == osp.join(str(tiny_root), 'a.png')
    assert (info['img_id'], info['width'], info['height']) == (1, 40, 30)
    assert info['instances'] == [
        dict(bbox=[1, 2, 11, 22], bbox_label=0, ignore_flag=0),
        dict(bbox=[30, 5, 50, 15], bbox_label=1, ignore_flag=0),
        dict(bbox=[2, 2, 6, 6], bbox_label=2, ignore_flag=1),
    ]
    assert ds.get_cat_ids(0) == [0, 1, 2]
    assert ds.get_data_info(1)['instances'] == [
        dict(bbox=[0, 0, 20, 50], bbox_label=2, ignore_flag=0)
    ]
    assert ds.get_data_info(4)['instances'] == []
    summary = [m for m in log_messages if 'annotations' in m]
    assert len(summary) == 1
    assert ('skipped 5 of 11 annotations (1 marked ignore, 1 box outside '
            'the image, 1 area <= 0, 1 w < 1 or h < 1, 1 category not in '
            'classes)') in summary[0]
    assert '1 boxes partly outside their image kept' in summary[0]
    assert '2 crowd boxes kept as ignored' in summary[0]


def test_class_subset_and_order_by_name(tiny_root):
    ds = _dataset(tiny_root, metainfo=dict(classes=('bird', 'cat')))
    assert ds.cat_ids == [7, 1]
    # dog (id 3) is now an unknown category
    assert ds.get_data_info(0)['instances'] == [
        dict(bbox=[1, 2, 11, 22], bbox_label=1, ignore_flag=0),
        dict(bbox=[2, 2, 6, 6], bbox_label=0, ignore_flag=1),
    ]
    assert ds.metainfo['classes'] == ('bird', 'cat')


def test_filter_cfg(tiny_root, log_messages):
    cfg = dict(filter_empty_gt=True, min_size=12)
    ds = _dataset(tiny_root, filter_cfg=cfg)
    # 3 has only a crowd box, 4 is 10 px, 5 has no box
    assert [ds.get_data_info(i)['img_id'] for i in range(len(ds))] == [1, 2]
    assert any('kept 2 of 5 images; dropped 2 without a non-ignored box '
               '(filter_empty_gt) and 1 with a side below min_size=12' in m
               for m in log_messages)
    only_size = _dataset(tiny_root, filter_cfg=dict(min_size=12))
    assert len(only_size) == 4
    # nothing is filtered for evaluation
    assert len(_dataset(tiny_root, filter_cfg=cfg, test_mode=True)) == 5
    with pytest.raises(KeyError, match='min_sise'):
        _dataset(tiny_root, filter_cfg=dict(min_sise=3))


def test_pipeline_from_config_and_registry(tiny_root):
    ds = DATASETS.build(
        dict(type='CocoDataset', ann_file='ann.json',
             data_root=str(tiny_root), metainfo=dict(classes=CLASSES),
             pipeline=[
                 dict(type='LoadImageFromFile'),
                 dict(type='LoadAnnotations'),
                 dict(type='Resize', scale=(80, 60), keep_ratio=True),
                 dict(type='PackDetInputs')
             ]))
    data = ds[0]
    # 40x30 -> s = min(80/40, 60/30) = 2
    assert data['inputs'].shape == (3, 60, 80)
    assert int(data['inputs'][0, 5, 5]) == 10
    sample = data['data_samples']
    assert sample.gt_instances.bboxes.tolist() == [[2, 4, 22, 44],
                                                   [60, 10, 80, 30]]
    assert sample.gt_instances.labels.tolist() == [0, 1]
    assert sample.ignored_instances.bboxes.tolist() == [[4, 4, 12, 12]]
    assert sample.img_id == 1 and sample.scale_factor == (2.0, 2.0)


@pytest.mark.parametrize('mutate, message', [
    (lambda c: c['images'][1].pop('width'),
     r'ann.json: image id=2 \(b.png\) has width=None'),
    (lambda c: c['images'][2].update(id=1), 'image id=1 appears twice'),
    (lambda c: c['annotations'][0].update(bbox=[1, 'a', 3, 4]),
     r'annotation id=1 \(image id=1\) has bbox=\[1, .a., 3, 4\]'),
    (lambda c: c['annotations'][0].update(bbox=[1, 2, 3]),
     'annotation id=1'),
    (lambda c: c['annotations'][1].update(id=1),
     'annotation id=1 appears twice'),
    (lambda c: c.pop('categories'), "no list 'categories'"),
    (lambda c: c['categories'].pop(), r"classes \['bird'\] of metainfo are "
     'not among its categories'),
])
def test_bad_annotation_files(tmp_path, mutate, message):
    coco = _tiny_coco()
    mutate(coco)
    _write(str(tmp_path), coco)
    with pytest.raises(ValueError, match=message):
        _dataset(tmp_path)


def test_missing_and_invalid_files(tmp_path):
    with pytest.raises(FileNotFoundError, match='nothing.json'):
        CocoDataset(ann_file=str(tmp_path / 'nothing.json'))
    (tmp_path / 'ann.json').write_text('{"images": [')
    with pytest.raises(ValueError, match='ann.json is not valid JSON'):
        _dataset(tmp_path)


# ---------------------------------------------------------- broken images
@pytest.fixture
def broken_root(tiny_root):
    data = (tiny_root / 'b.png').read_bytes()
    (tiny_root / 'b.png').write_bytes(data[:len(data) // 2])
    return tiny_root


PIPELINE = [dict(type='LoadImageFromFile'), dict(type='PackDetInputs')]


def test_broken_image_error_names_index_and_path(broken_root):
    ds = _dataset(broken_root, pipeline=PIPELINE)
    with pytest.raises(DatasetSampleError) as info:
        ds[1]
    message = str(info.value)
    assert 'dataset index 1' in message
    assert str(broken_root / 'b.png') in message
    assert 'truncated' in message and 'skip_broken=True' in message
    assert info.value.index == 1
    # test_mode raises even with skip_broken
    ds = _dataset(broken_root, pipeline=PIPELINE, test_mode=True,
                  skip_broken=True)
    with pytest.raises(DatasetSampleError, match='dataset index 1'):
        ds[1]


def test_skip_broken_fetches_another_and_reports(broken_root, log_messages):
    ds = _dataset(broken_root, pipeline=PIPELINE, skip_broken=True)
    assert ds.report_broken() == ''
    np.random.seed(0)
    replacement = np.random.randint(0, 5)
    np.random.seed(0)
    data = ds[1]
    if replacement != 1:  # the refetch draws indices like mmengine
        assert data['data_samples'].img_id == replacement + 1
    path = str(broken_root / 'b.png')
    assert len(ds.broken_images) == 1
    index, got_path, reason = ds.broken_images[0]
    assert (index, got_path) == (1, path) and 'truncated' in reason
    ds[1]  # the same image again is reported once
    assert len(ds.broken_images) == 1
    report = ds.report_broken()
    assert '1 broken image(s) skipped' in report and path in report
    assert any('skipping broken image at dataset index 1' in m
               for m in log_messages)


def test_skip_broken_is_visible_from_dataloader_workers(broken_root):
    ds = _dataset(broken_root, pipeline=PIPELINE, skip_broken=True)
    loader = torch.utils.data.DataLoader(
        ds, batch_size=1, num_workers=1, collate_fn=lambda batch: batch)
    ids = [batch[0]['data_samples'].img_id for batch in loader]
    assert len(ids) == 5 and 2 not in ids
    assert [entry[0] for entry in ds.broken_images] == [1]
    assert str(broken_root / 'b.png') in ds.report_broken()


def test_pipeline_bugs_are_not_skipped(tiny_root):
    def bad_transform(results):
        return results['no_such_key']

    ds = _dataset(tiny_root, pipeline=[bad_transform], skip_broken=True)
    with pytest.raises(DatasetSampleError,
                       match=r"dataset index 0 .*a.png.*KeyError"):
        ds[0]
    assert ds.broken_images == []


# ------------------------------------------------------------- real data
def _bccd(bccd_dir, split='train', **kwargs):
    return CocoDataset(
        data_root=bccd_dir, ann_file=f'{split}.json',
        data_prefix=dict(img='images/'),
        metainfo=dict(classes=('RBC', 'WBC', 'Platelets')), **kwargs)


def test_bccd_counts(bccd_dir):
    train = _bccd(bccd_dir, filter_cfg=dict(filter_empty_gt=True,
                                            min_size=32))
    assert len(train) == 292
    assert train.cat_ids == [1, 2, 3]
    labels = Counter(lbl for i in range(len(train))
                     for lbl in train.get_cat_ids(i))
    assert labels == {0: 3348, 1: 301, 2: 292}
    first = train.get_data_info(0)
    assert first['img_path'].endswith('images/BloodImage_00000.jpg')
    assert (first['width'], first['height']) == (640, 480)
    # json bbox [260, 177, 231, 199] of a WBC
    assert first['instances'][0] == dict(bbox=[260, 177, 491, 376],
                                         bbox_label=1, ignore_flag=0)
    val = _bccd(bccd_dir, 'val', test_mode=True)
    assert len(val) == 72
    assert sum(len(val.get_cat_ids(i)) for i in range(len(val))) == 945


def test_bccd_needs_its_classes(bccd_dir):
    with pytest.raises(ValueError, match=r"metainfo=dict\(classes=\('RBC', "
                       r"'WBC', 'Platelets'\)\)"):
        CocoDataset(data_root=bccd_dir, ann_file='train.json')


def test_bccd_train_pipeline_numbers(bccd_dir):
    ds = _bccd(bccd_dir, pipeline=[
        dict(type='LoadImageFromFile'),
        dict(type='LoadAnnotations', with_bbox=True),
        dict(type='Resize', scale=(1333, 800), keep_ratio=True),
        dict(type='RandomFlip', prob=1.0),
        dict(type='PackDetInputs')
    ])
    data = ds[0]
    sample = data['data_samples']
    assert data['inputs'].shape == (3, 800, 1067)
    assert sample.scale_factor == (1067 / 640, 800 / 480)
    assert sample.ori_shape == (480, 640) and sample.img_shape == (800, 1067)
    # [260, 177, 491, 376] * (1.6671875, 5/3), then x' = 1067 - x
    np.testing.assert_allclose(
        sample.gt_instances.bboxes[0].numpy(),
        [1067 - 491 * 1.6671875, 295.0, 1067 - 260 * 1.6671875, 626.666667],
        rtol=1e-6)
    # the pixels are cv2's decode + INTER_LINEAR resize, mirrored
    img = cv2.imread(osp.join(bccd_dir, 'images', 'BloodImage_00000.jpg'))
    expected = cv2.resize(img, (1067, 800),
                          interpolation=cv2.INTER_LINEAR)[:, ::-1]
    assert torch.equal(data['inputs'],
                       torch.from_numpy(expected.transpose(2, 0, 1).copy()))


def test_worker_errors_keep_their_type_and_message(broken_root):
    ds = _dataset(broken_root, pipeline=PIPELINE)
    loader = torch.utils.data.DataLoader(
        ds, batch_size=1, num_workers=1, collate_fn=lambda batch: batch)
    batches = iter(loader)
    assert next(batches)[0]['data_samples'].img_id == 1
    with pytest.raises(DatasetSampleError,
                       match=r'dataset index 1 \(image .*b.png\)'):
        next(batches)
    batches._shutdown_workers()  # now, not at interpreter exit
