"""Configs' datasets without their data: which datasets a config names,
their classes, and a one-image COCO annotation file to build them on."""
import copy
import json
from typing import List, Optional, Sequence, Tuple

from mmengine.registry import DefaultScope


def innermost_datasets(dataset_cfg) -> list:
    """The datasets that hold a ``pipeline``, through wrappers
    (``RepeatDataset.dataset``, ``ConcatDataset.datasets``, ...)."""
    if 'dataset' in dataset_cfg:
        return innermost_datasets(dataset_cfg['dataset'])
    if 'datasets' in dataset_cfg:
        return [d for sub in dataset_cfg['datasets']
                for d in innermost_datasets(sub)]
    return [dataset_cfg]


def dataloaders(cfg) -> List[Tuple[str, dict]]:
    """``(name, dataloader cfg)`` of the train / val / test loaders the
    config has."""
    return [(name, cfg[name])
            for name in ('train_dataloader', 'val_dataloader',
                         'test_dataloader') if cfg.get(name)]


def classes_of(dataset_cfg) -> Optional[Sequence[str]]:
    """A dataset config's classes: its ``metainfo``'s, else its dataset
    class's ``METAINFO``'s (None when neither names any)."""
    from detkit.registry import DATASETS
    classes = (dataset_cfg.get('metainfo') or {}).get('classes')
    if classes is None:
        with DefaultScope.overwrite_default_scope('detkit'):
            cls = DATASETS.get(dataset_cfg['type'])
        classes = (getattr(cls, 'METAINFO', None) or {}).get('classes')
    return classes


def dataset_classes(cfg) -> List[str]:
    """Class names of the config's test (or else val, train) dataset."""
    for _, loader in reversed(dataloaders(cfg)):
        for dataset in innermost_datasets(loader['dataset']):
            classes = classes_of(dataset)
            if classes:
                return list(classes)
    return ['object']


def write_dummy_coco(path: str, classes: Sequence[str]) -> str:
    """A COCO annotation file with one 640x480 image and one box of the
    first class, categories numbered 1.. in ``classes`` order."""
    data = dict(
        images=[dict(id=1, file_name='dummy.jpg', width=640, height=480)],
        annotations=[
            dict(id=1, image_id=1, category_id=1, bbox=[10, 20, 100, 80],
                 area=8000, iscrowd=0)
        ],
        categories=[dict(id=i + 1, name=c) for i, c in enumerate(classes)])
    with open(path, 'w') as f:
        json.dump(data, f)
    return path


def dummy_datasets(dataset_cfg, ann_file):
    """Point every COCO-json dataset at ``ann_file``; leave the others
    unloaded (``lazy_init``, and so the wrappers around them): their files
    are not read."""
    dataset_cfg = copy.deepcopy(dataset_cfg)

    def visit(node) -> bool:  # True when ``node`` stays unloaded
        children = ([node['dataset']] if 'dataset' in node else list(
            node.get('datasets', [])))
        if children:
            lazy = any([visit(child) for child in children])
        elif str(node.get('ann_file', '')).endswith('.json'):
            node['ann_file'] = ann_file
            # Serialising calls gc.collect(), 0.25 s a dataset, for nothing.
            node['serialize_data'] = False
            lazy = False
        else:
            lazy = True
        if lazy:
            node['lazy_init'] = True
        return lazy

    visit(dataset_cfg)
    return dataset_cfg
