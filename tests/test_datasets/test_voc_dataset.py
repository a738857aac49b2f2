"""VOCDataset and the VOC -> COCO converter on a tiny VOC tree."""
import importlib.util
import json
import os.path as osp

import cv2
import numpy as np
import pytest

from detkit.datasets import CocoDataset, VOC_CLASSES, VOCDataset

REPO = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))

XML = """<annotation>
  <filename>{name}.jpg</filename>
  {size}
  {objects}
</annotation>"""
OBJECT = """<object><name>{name}</name><difficult>{difficult}</difficult>
  <bndbox><xmin>{box[0]}</xmin><ymin>{box[1]}</ymin><xmax>{box[2]}</xmax>
  <ymax>{box[3]}</ymax></bndbox></object>"""

# name: (width, height, write <size>?, objects (class, difficult, box))
IMAGES = {
    '000001': (60, 40, True, [('dog', 0, (11, 6, 41, 36)),
                              ('person', 1, (2, 3, 8.6, 20)),
                              ('unicorn', 0, (1, 1, 5, 5))]),
    '000002': (30, 50, False, [('cat', 0, (1, 1, 30, 50))]),
    '000003': (60, 40, True, []),
}


@pytest.fixture
def devkit(tmp_path):
    root = tmp_path / 'VOCdevkit' / 'VOC2007'
    for sub in ('Annotations', 'JPEGImages', 'ImageSets/Main'):
        (root / sub).mkdir(parents=True)
    for name, (w, h, with_size, objects) in IMAGES.items():
        cv2.imwrite(str(root / 'JPEGImages' / f'{name}.jpg'),
                    np.full((h, w, 3), 128, np.uint8))
        size = (f'<size><width>{w}</width><height>{h}</height>'
                '<depth>3</depth></size>' if with_size else '')
        objs = '\n'.join(
            OBJECT.format(name=n, difficult=d, box=b) for n, d, b in objects)
        (root / 'Annotations' / f'{name}.xml').write_text(
            XML.format(name=name, size=size, objects=objs))
    main = root / 'ImageSets' / 'Main'
    main.joinpath('trainval.txt').write_text('000001\n000002\n000003\n')
    main.joinpath('test.txt').write_text('000002\n')
    return tmp_path / 'VOCdevkit'


def _voc(devkit, **kwargs):
    return VOCDataset(data_root=str(devkit),
                      ann_file='VOC2007/ImageSets/Main/trainval.txt',
                      data_prefix=dict(sub_data_root='VOC2007/'), **kwargs)


def test_voc_parsing(devkit):
    ds = _voc(devkit)
    assert len(ds) == 3
    assert ds.metainfo['dataset_type'] == 'VOC2007'
    assert len(ds.metainfo['classes']) == 20
    info = ds.get_data_info(0)
    assert info['img_path'] == osp.join(str(devkit), 'VOC2007', 'JPEGImages',
                                        '000001.jpg')
    assert (info['img_id'], info['width'], info['height']) == ('000001', 60,
                                                               40)
    # every coordinate int(float(v)) - 1; difficult -> ignored; the
    # unknown class is skipped
    assert info['instances'] == [
        dict(bbox=[10, 5, 40, 35], bbox_label=VOC_CLASSES.index('dog'),
             ignore_flag=0),
        dict(bbox=[1, 2, 7, 19], bbox_label=14, ignore_flag=1),
    ]
    # no <size>: read from the image (30 wide, 50 high)
    second = ds.get_data_info(1)
    assert (second['width'], second['height']) == (30, 50)
    assert second['instances'][0]['bbox'] == [0, 0, 29, 49]


def test_voc_filter_and_bbox_min_size(devkit):
    ds = _voc(devkit, filter_cfg=dict(filter_empty_gt=True, min_size=32))
    # 000002 is 30 px wide, 000003 has no box
    assert [ds.get_data_info(i)['img_id'] for i in range(len(ds))] == [
        '000001'
    ]
    ds = _voc(devkit, filter_cfg=dict(bbox_min_size=31))
    # the dog is 30 x 30 -> ignored as too small
    assert [i['ignore_flag'] for i in ds.get_data_info(0)['instances']] == [
        1, 1
    ]


def test_voc_pipeline(devkit):
    ds = _voc(devkit, pipeline=[
        dict(type='LoadImageFromFile'),
        dict(type='LoadAnnotations'),
        dict(type='PackDetInputs')
    ])
    sample = ds[0]['data_samples']
    assert sample.gt_instances.bboxes.tolist() == [[10, 5, 40, 35]]
    assert sample.ignored_instances.labels.tolist() == [14]


def test_voc_errors(devkit):
    with pytest.raises(FileNotFoundError, match='nothing.txt'):
        VOCDataset(data_root=str(devkit), ann_file='nothing.txt')
    xml = devkit / 'VOC2007' / 'Annotations' / '000001.xml'
    xml.write_text(xml.read_text().replace('<xmin>11</xmin>',
                                           '<xmin>eleven</xmin>'))
    with pytest.raises(ValueError, match=r'000001.xml: object 0 \(dog\) has '
                       'no numeric <xmin>'):
        _voc(devkit)


def _converter():
    spec = importlib.util.spec_from_file_location(
        'pascal_voc', osp.join(REPO, 'tools', 'dataset_converters',
                               'pascal_voc.py'))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_converter_matches_voc_dataset(devkit, tmp_path, capsys):
    out_dir = tmp_path / 'coco'
    written = _converter().main([str(devkit), '-o', str(out_dir)])
    assert sorted(osp.basename(p) for p in written) == [
        'voc07_test.json', 'voc07_trainval.json'
    ]
    assert 'voc07_trainval.json: 3 images, 3 boxes' in capsys.readouterr().out
    coco = json.loads((out_dir / 'voc07_trainval.json').read_text())
    assert [c['id'] for c in coco['categories']] == list(range(1, 21))
    assert coco['images'][1] == dict(id=2, file_name='VOC2007/JPEGImages/'
                                     '000002.jpg', width=30, height=50)
    assert coco['annotations'][0]['bbox'] == [10, 5, 30, 30]
    assert coco['annotations'][1]['iscrowd'] == 1
    pycocotools = pytest.importorskip('pycocotools.coco')
    api = pycocotools.COCO(str(out_dir / 'voc07_trainval.json'))
    assert len(api.getAnnIds()) == 3
    # Read through CocoDataset, the converted file gives VOCDataset's boxes.
    as_coco = CocoDataset(data_root=str(devkit),
                          ann_file=str(out_dir / 'voc07_trainval.json'),
                          metainfo=dict(classes=VOC_CLASSES))
    voc = _voc(devkit)
    for i in range(3):
        assert as_coco.get_data_info(i)['instances'] == voc.get_data_info(
            i)['instances']
        assert as_coco.get_data_info(i)['img_path'] == voc.get_data_info(
            i)['img_path']
