"""Pascal VOC: one xml per image, image lists in ``ImageSets/Main``.

Layout (``data_root`` is the ``VOCdevkit`` folder)::

    VOC2007/ImageSets/Main/trainval.txt   one image id per line
    VOC2007/Annotations/<id>.xml
    VOC2007/JPEGImages/<id>.jpg

Config (mmdetection's keys)::

    dict(type='VOCDataset', data_root='data/VOCdevkit/',
         ann_file='VOC2007/ImageSets/Main/trainval.txt',
         data_prefix=dict(sub_data_root='VOC2007/'))

Boxes: VOC coordinates are 1-based pixel indices; like mmdetection 3.3,
each of ``xmin, ymin, xmax, ymax`` is truncated to an int and reduced by 1
(so width = ``xmax - xmin``). ``difficult`` objects get ``ignore_flag = 1``,
and so do boxes smaller than ``filter_cfg['bbox_min_size']`` in training.
Objects of other classes are skipped.
"""
import os.path as osp
import xml.etree.ElementTree as ET
from typing import List, Optional

from mmengine.fileio import get_local_path, list_from_file

from detkit.registry import DATASETS
from .base_det_dataset import BaseDetDataset
from .coco import make_palette
from .transforms.loading import (BrokenImageError, imread_bytes,
                                 read_image_bytes)

VOC_CLASSES = ('aeroplane', 'bicycle', 'bird', 'boat', 'bottle', 'bus', 'car',
               'cat', 'chair', 'cow', 'diningtable', 'dog', 'horse',
               'motorbike', 'person', 'pottedplant', 'sheep', 'sofa', 'train',
               'tvmonitor')


def parse_voc_xml(xml_path: str, backend_args: Optional[dict] = None):
    """``(width, height, objects)`` of one VOC xml file.

    ``width``/``height`` are None when ``<size>`` is missing; ``objects`` is
    a list of ``dict(name, difficult, bbox=[xmin, ymin, xmax, ymax])`` with
    the values as written in the file (ints). Raises ValueError naming the
    file on malformed xml.
    """
    try:
        with get_local_path(xml_path, backend_args=backend_args) as local:
            root = ET.parse(local).getroot()
    except FileNotFoundError:
        raise FileNotFoundError(
            f'VOC annotation {xml_path} does not exist (check data_root and '
            'sub_data_root)') from None
    except ET.ParseError as err:
        raise ValueError(f'{xml_path} is not valid xml: {err}') from None

    def number(node, tag, what):
        child = node.find(tag) if node is not None else None
        try:
            return int(float(child.text))
        except (AttributeError, TypeError, ValueError):
            raise ValueError(f'{xml_path}: {what} has no numeric <{tag}>'
                             ) from None

    size = root.find('size')
    width = height = None
    if size is not None and size.find('width') is not None:
        width = number(size, 'width', '<size>')
        height = number(size, 'height', '<size>')
    objects = []
    for i, obj in enumerate(root.findall('object')):
        name = obj.findtext('name', '').strip()
        box = obj.find('bndbox')
        what = f'object {i} ({name or "no name"})'
        bbox = [number(box, t, what) for t in ('xmin', 'ymin', 'xmax',
                                                'ymax')]
        difficult = obj.findtext('difficult')
        objects.append(
            dict(
                name=name,
                difficult=int(difficult) if difficult else 0,
                bbox=bbox))
    return width, height, objects


@DATASETS.register_module()
class VOCDataset(BaseDetDataset):
    """Pascal VOC 2007/2012 detection (20 classes).

    Extra args: ``img_subdir='JPEGImages'``, ``ann_subdir='Annotations'``;
    the rest as :class:`BaseDetDataset`. ``metainfo['dataset_type']`` is
    ``'VOC2007'``/``'VOC2012'`` (from ``sub_data_root``), which VOC metrics
    use to pick the AP flavour.
    """

    METAINFO = dict(classes=VOC_CLASSES, palette=make_palette(20))
    FILTER_KEYS = ('filter_empty_gt', 'min_size', 'bbox_min_size')

    def __init__(self,
                 ann_file: str = '',
                 metainfo: Optional[dict] = None,
                 data_root: str = '',
                 data_prefix: dict = dict(sub_data_root=''),
                 filter_cfg: Optional[dict] = None,
                 indices=None,
                 serialize_data: bool = True,
                 pipeline=(),
                 test_mode: bool = False,
                 lazy_init: bool = False,
                 max_refetch: int = 1000,
                 backend_args: Optional[dict] = None,
                 skip_broken: bool = False,
                 return_classes: bool = False,
                 img_subdir: str = 'JPEGImages',
                 ann_subdir: str = 'Annotations'):
        self.img_subdir = img_subdir
        self.ann_subdir = ann_subdir
        super().__init__(
            ann_file=ann_file,
            metainfo=metainfo,
            data_root=data_root,
            data_prefix=data_prefix,
            filter_cfg=filter_cfg,
            indices=indices,
            serialize_data=serialize_data,
            pipeline=pipeline,
            test_mode=test_mode,
            lazy_init=lazy_init,
            max_refetch=max_refetch,
            backend_args=backend_args,
            skip_broken=skip_broken,
            return_classes=return_classes)
        for year in ('VOC2007', 'VOC2012'):
            if year in self.sub_data_root:
                self._metainfo['dataset_type'] = year
                break
        else:
            self._metainfo['dataset_type'] = None

    @property
    def sub_data_root(self) -> str:
        return self.data_prefix.get('sub_data_root', '')

    def load_data_list(self) -> List[dict]:
        if not osp.isfile(self.ann_file) and '://' not in self.ann_file:
            raise FileNotFoundError(
                f'VOCDataset: image list {self.ann_file} does not exist; '
                'ann_file is a split file such as '
                "'VOC2007/ImageSets/Main/trainval.txt' under data_root")
        self.cat2label = {c: i for i, c in enumerate(self.metainfo['classes'])}
        img_ids = [
            line.strip() for line in list_from_file(
                self.ann_file, backend_args=self.backend_args)
            if line.strip()
        ]
        return [self._parse_image(img_id) for img_id in img_ids]

    def _parse_image(self, img_id: str) -> dict:
        root = self.sub_data_root
        img_path = osp.join(root, self.img_subdir, f'{img_id}.jpg')
        xml_path = osp.join(root, self.ann_subdir, f'{img_id}.xml')
        width, height, objects = parse_voc_xml(xml_path, self.backend_args)
        if width is None or width <= 0 or height <= 0:
            # mmdetection falls back to the image itself, so does detkit.
            try:
                img = imread_bytes(
                    read_image_bytes(img_path, self.backend_args), img_path)
            except BrokenImageError as err:
                raise ValueError(f'{xml_path} has no <size> and the image '
                                 f'{img_path} cannot be read to get it: '
                                 f'{err.reason}') from None
            height, width = img.shape[:2]
        min_box = (self.filter_cfg or {}).get('bbox_min_size')
        instances = []
        for obj in objects:
            if obj['name'] not in self.cat2label:
                self.audit.skip('category', img_id=img_id, name=obj['name'])
                continue
            bbox = [v - 1 for v in obj['bbox']]
            too_small = (min_box is not None and not self.test_mode and min(
                bbox[2] - bbox[0], bbox[3] - bbox[1]) < min_box)
            instances.append(
                dict(
                    bbox=bbox,
                    bbox_label=self.cat2label[obj['name']],
                    ignore_flag=int(bool(obj['difficult']) or too_small)))
        return dict(
            img_path=img_path,
            img_id=img_id,
            xml_path=xml_path,
            width=width,
            height=height,
            instances=instances)
