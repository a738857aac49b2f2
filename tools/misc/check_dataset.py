"""Check the dataset a config describes, without training: everything the
loaders would skip, fix up or refuse, with counts and the first examples.

    python tools/misc/check_dataset.py CONFIG [--split train|val|test]
        [--fix OUT.json] [--max-examples 5] [--workers 4]
        [--cfg-options KEY=VALUE ...]

The checks are the dataset's own code, run to the end instead of stopping
at the first problem: the dataset class parses the annotation file with a
collecting ``AnnotationAudit`` (duplicate ids, images without a size, bad
or degenerate boxes, boxes outside the image, unknown categories, ...),
its ``filter_data`` applies ``filter_cfg``, and the ``LoadImageFromFile``
of the split's pipeline reads every image (missing, empty, truncated,
corrupt, not a regular file, size different from the annotation, EXIF
rotation). Then crowd-only and empty images and the class balance.

Exit status 1 when something is an error (training or testing would stop
on it), else 0. ``--fix OUT.json`` (COCO files) writes a cleaned copy:
images whose file cannot be used and annotations the loader skips as
unusable are removed, missing image sizes are read from the files, ids are
made unique integers and boxes are clipped to their image; it prints what
it removed or corrected. Point ``ann_file`` to OUT.json and run the check
again.
"""
import argparse
import json
import logging
import os
import os.path as osp
import sys
from collections import Counter
from concurrent.futures import ThreadPoolExecutor

from mmengine.config import Config, DictAction
from mmengine.fileio import get_local_path
from mmengine.logging import MMLogger
from mmengine.registry import DefaultScope

from detkit.datasets import CocoDataset
from detkit.datasets.base_det_dataset import AnnotationAudit, has_usable_box
from detkit.datasets.transforms.loading import (BrokenImageError,
                                                LoadImageFromFile)
from detkit.engine.launch import check_cfg_options
from detkit.registry import DATASETS
from detkit.utils.scope import to_detkit_scope

# kind: (severity, what it means). Severities: 'error' stops training or
# testing; 'skip' is left out by the loaders; 'note' is kept (as it is or
# fixed up on the fly).
KINDS = {
    'no_images': ('error', 'the file lists no image'),
    'all_filtered': ('error', 'filter_cfg leaves no image to train on'),
    'image_without_id': ('error', 'image entries without an "id"'),
    'duplicate_image_id': ('error', 'image ids listed twice'),
    'image_without_file_name': ('error', 'images without a "file_name"'),
    'image_size': ('error', 'images without a positive width/height'),
    'image_id_not_int': ('error', 'image ids that are not integers (COCO '
                         'evaluation refuses them)'),
    'image_id_not_int_train': ('note', 'image ids that are not integers '
                               '(training takes them; COCO evaluation of '
                               'this file would refuse them)'),
    'duplicate_ann_id': ('error', 'annotation ids listed twice'),
    'bad_bbox': ('error', 'annotations whose bbox is not 4 numbers'),
    'broken_image': ('error', 'image files that cannot be read'),
    'size_mismatch': ('error', 'images whose size differs from the '
                      'annotation'),
    'exif_swapped': ('error', 'images whose width and height are swapped '
                     'against the annotation (EXIF rotation)'),
    'orphan': ('skip', 'annotations whose image_id is not in "images"'),
    'small': ('skip', 'degenerate boxes (w < 1 or h < 1)'),
    'area': ('skip', 'annotations with area <= 0'),
    'outside': ('skip', 'boxes entirely outside their image'),
    'unknown_category': ('skip', 'annotations of a category id the file '
                         'does not define'),
    'category': ('skip', 'annotations of a category not in the classes'),
    'ignore': ('skip', 'annotations marked "ignore"'),
    'filtered_small': ('skip', 'images with a side below '
                       'filter_cfg.min_size'),
    'partial': ('note', 'boxes partly outside their image (kept, clipped '
                'by Resize)'),
    'crowd': ('note', 'crowd boxes (kept as ignored)'),
    'crowd_only': ('note', 'images whose only boxes are crowd/ignored'),
    'empty_image': ('note', 'images without any box'),
    'class_without_boxes': ('note', 'classes without a single box'),
}
TITLES = dict(error='ERRORS (training/testing stops on these)',
              skip='SKIPPED by the loaders',
              note='NOTES (kept as they are or fixed up on the fly)')
# What --fix removes (annotations) or repairs; 'ignore' and 'category' are
# deliberate choices of the file or the config, so they stay.
FIX_REMOVES_ANNS = ('bad_bbox', 'orphan', 'small', 'area', 'outside',
                    'unknown_category')
FIX_REMOVES_IMAGES = ('image_without_id', 'image_without_file_name',
                      'duplicate_image_id', 'broken_image', 'size_mismatch',
                      'exif_swapped')


def leaf_datasets(dataset_cfg):
    """The dataset configs inside wrappers (RepeatDataset, ConcatDataset)."""
    if 'datasets' in dataset_cfg:
        return [leaf for d in dataset_cfg['datasets']
                for leaf in leaf_datasets(d)]
    if 'dataset' in dataset_cfg:
        return leaf_datasets(dataset_cfg['dataset'])
    return [dataset_cfg]


class DatasetCheck:
    """The findings of one dataset: ``findings[kind]`` is a list of
    ``(message, where)``; ``raw`` the COCO json (None for other formats)."""

    def __init__(self, dataset, raw):
        self.dataset, self.raw = dataset, raw
        self.findings = {}
        self.decoded = {}  # img_id -> (width, height) of readable files
        self.class_boxes, self.class_images = Counter(), Counter()
        self.num_images = 0

    def add(self, kind, message='', **where):
        self.findings.setdefault(kind, []).append((message, where))

    @property
    def has_errors(self):
        return any(KINDS.get(k, ('error', ))[0] == 'error'
                   for k in self.findings)


def check_dataset(dataset_cfg, workers=4):
    """Parse, filter and read every image of one dataset config."""
    dataset = DATASETS.build(dict(dataset_cfg, lazy_init=True))
    dataset.audit = audit = AnnotationAudit(strict=False)
    data_list = dataset.load_data_list()  # fatal problems raise here
    raw = None
    if isinstance(dataset, CocoDataset):
        with get_local_path(dataset.ann_file,
                            backend_args=dataset.backend_args) as path:
            with open(path) as f:
                raw = json.load(f)
    dataset.data_list = data_list
    dataset.filter_data()
    check = DatasetCheck(dataset, raw)
    check.num_images = len(data_list)
    category_ids = {c.get('id') for c in raw['categories']} if raw else ()
    for kind, records in audit.records.items():
        if kind == 'filtered_empty':
            continue  # reported below as empty or crowd-only images
        for message, where in records:
            shown = kind
            if kind == 'category' and raw is not None and _category_of(
                    raw, where) not in category_ids:
                shown = 'unknown_category'
            elif kind == 'image_id_not_int' and not dataset.test_mode:
                shown = 'image_id_not_int_train'
            check.add(shown, message, **where)
    _check_images(check, data_list, audit, workers)
    classes = dataset.metainfo['classes']
    for info in data_list:
        if not info['instances']:
            check.add('empty_image', img_id=info['img_id'],
                      path=info['img_path'])
        elif not has_usable_box(info):
            check.add('crowd_only', img_id=info['img_id'],
                      path=info['img_path'])
        labels = [i['bbox_label'] for i in info['instances']
                  if not i['ignore_flag']]
        check.class_boxes.update(labels)
        check.class_images.update(set(labels))
    for label, name in enumerate(classes):
        if not check.class_boxes[label]:
            check.add('class_without_boxes', cls=name)
    return check


def _category_of(raw, where):
    return raw['annotations'][where['ann_index']].get('category_id')


def _check_images(check, data_list, audit, workers):
    """Read each image with the split's own LoadImageFromFile (images that
    the parser refused for their size are read too, for --fix)."""
    dataset = check.dataset
    loaders = [t for t in getattr(dataset.pipeline, 'transforms', [])
               if isinstance(t, LoadImageFromFile)]
    loader = loaders[0] if loaders else LoadImageFromFile()
    jobs = [(info['img_id'], info['img_path'], info['width'],
             info['height']) for info in data_list]
    prefix = dataset.data_prefix.get('img', '')
    jobs += [(where['img_id'], osp.join(prefix, where['file_name']), None,
              None) for _, where in audit.records.get('image_size', [])]

    def read(job):
        img_id, path, width, height = job
        results = dict(img_path=path)
        if width is not None:
            results.update(width=width, height=height)
        try:
            shape = loader.transform(results)['img'].shape
        except BrokenImageError as err:
            return job, 'broken_image', f'{path}: {err.reason}', None
        except ValueError as err:
            if not hasattr(err, 'decoded'):
                raise
            kind = 'exif_swapped' if err.swapped else 'size_mismatch'
            return job, kind, str(err), err.decoded
        return job, None, None, (shape[1], shape[0])

    with ThreadPoolExecutor(max(1, workers)) as pool:
        for job, kind, message, size in pool.map(read, jobs):
            img_id, path = job[0], job[1]
            if size is not None:
                check.decoded[img_id] = size
            if kind:
                check.add(kind, message, img_id=img_id, path=path)


def describe(check, where):
    """One example line for a finding."""
    raw = check.raw
    if 'ann_index' in where and raw is not None:
        ann = raw['annotations'][where['ann_index']]
        return (f'annotation id={ann.get("id")!r} of image '
                f'id={ann.get("image_id")!r}: bbox={ann.get("bbox")}, '
                f'category_id={ann.get("category_id")!r}')
    if 'path' in where:
        return f'image id={where["img_id"]!r}: {where["path"]}'
    return ', '.join(f'{k}={v!r}' for k, v in where.items()
                     if not k.endswith('_index'))


def format_report(check, max_examples=5):
    dataset = check.dataset
    classes = dataset.metainfo['classes']
    lines = [f'{type(dataset).__name__}: {dataset.ann_file} '
             f'({check.num_images} images parsed, images under '
             f'{dataset.data_prefix.get("img", dataset.data_root)!r}, '
             f'test_mode={dataset.test_mode}, '
             f'filter_cfg={dataset.filter_cfg})']
    for severity in ('error', 'skip', 'note'):
        kinds = [k for k in KINDS if KINDS[k][0] == severity and
                 k in check.findings]
        if not kinds:
            continue
        lines.append(TITLES[severity])
        for kind in kinds:
            found = check.findings[kind]
            lines.append(f'  {len(found)} {KINDS[kind][1]} [{kind}]')
            for message, where in found[:max_examples]:
                example = message or describe(check, where)
                lines.append(f'      {example}')
            if len(found) > max_examples:
                lines.append(f'      ... and {len(found) - max_examples} '
                             'more')
    lines.append('class balance (boxes that are not ignored / images):')
    width = max(len(c) for c in classes)
    for label, name in enumerate(classes):
        lines.append(f'  {name:<{width}}  {check.class_boxes[label]:>7}  '
                     f'{check.class_images[label]:>6}')
    counts = [check.class_boxes[i] for i in range(len(classes))]
    if min(counts) > 0 and max(counts) >= 10 * min(counts):
        lines.append(f'  imbalance: the largest class has '
                     f'{max(counts) / min(counts):.1f}x the boxes of the '
                     'smallest')
    errors = sum(len(v) for k, v in check.findings.items()
                 if KINDS.get(k, ('error', ))[0] == 'error')
    lines.append(f'{errors} errors' if errors else 'no errors')
    return '\n'.join(lines)


def write_fixed(check, out):
    """Write a cleaned copy of the COCO file; returns what was done, as
    printable lines."""
    raw = json.loads(json.dumps(check.raw))  # a deep copy
    removed_images, removed_anns, done = Counter(), Counter(), Counter()
    drop_images = {}  # index in "images" -> kind
    for kind in ('image_without_id', 'image_without_file_name',
                 'duplicate_image_id'):
        for _, where in check.findings.get(kind, []):
            drop_images[where['image_index']] = kind
    first_index = {}
    for index, img in enumerate(raw['images']):
        first_index.setdefault(img.get('id'), index)
    for kind in ('broken_image', 'size_mismatch', 'exif_swapped'):
        for _, where in check.findings.get(kind, []):
            drop_images[first_index[where['img_id']]] = kind
    for _, where in check.findings.get('image_size', []):
        size = check.decoded.get(where['img_id'])
        if size is None:
            drop_images[where['image_index']] = 'image_size'
        else:
            img = raw['images'][where['image_index']]
            img['width'], img['height'] = size
            done['image sizes read from their files'] += 1
    removed_images.update(drop_images.values())
    images = [img for i, img in enumerate(raw['images'])
              if i not in drop_images]
    kept_ids = {img['id'] for img in images}
    drop_anns = {}
    for kind in FIX_REMOVES_ANNS:
        for _, where in check.findings.get(kind, []):
            drop_anns[where['ann_index']] = kind
    anns = []
    for index, ann in enumerate(raw['annotations']):
        if index in drop_anns:
            removed_anns[drop_anns[index]] += 1
        elif ann.get('image_id') not in kept_ids:
            removed_anns['of removed images'] += 1
        else:
            anns.append(ann)
    _renumber(images, anns, done)
    sizes = {img['id']: (img['width'], img['height']) for img in images}
    for ann in anns:
        if _clip(ann, *sizes[ann['image_id']]):
            done['boxes clipped to their image'] += 1
    raw['images'], raw['annotations'] = images, anns
    if osp.dirname(out):
        os.makedirs(osp.dirname(out), exist_ok=True)
    with open(out, 'w') as f:
        json.dump(raw, f)

    def listed(counts):
        return ', '.join(f'{n} {what}' for what, n in counts.items())

    lines = [f'--fix: wrote {out} ({len(images)} images, {len(anns)} '
             'annotations)']
    if removed_images:
        lines.append(f'  removed {sum(removed_images.values())} images: '
                     f'{listed(removed_images)}')
    if removed_anns:
        lines.append(f'  removed {sum(removed_anns.values())} annotations: '
                     f'{listed(removed_anns)}')
    if done:
        lines.append(f'  corrected: {listed(done)}')
    if len(lines) == 1:
        lines.append('  nothing to change')
    return '\n'.join(lines)


def _renumber(images, anns, done):
    """Unique integer ids: non-integer image ids (and their annotations'
    image_id) and repeated annotation ids get new numbers."""
    ints = [i['id'] for i in images if type(i['id']) is int]
    new_id, mapping = max(ints, default=0) + 1, {}
    for img in images:
        if type(img['id']) is not int:
            mapping[img['id']], img['id'] = new_id, new_id
            new_id += 1
            done['image ids renumbered to integers'] += 1
    seen = set()
    next_ann = max((a['id'] for a in anns if type(a.get('id')) is int),
                   default=0) + 1
    for ann in anns:
        ann['image_id'] = mapping.get(ann['image_id'], ann['image_id'])
        if ann.get('id') in seen or type(ann.get('id')) is not int:
            ann['id'], next_ann = next_ann, next_ann + 1
            done['annotation ids renumbered'] += 1
        seen.add(ann['id'])


def _clip(ann, width, height):
    x, y, w, h = ann['bbox']
    x1, y1 = max(x, 0), max(y, 0)
    x2, y2 = min(x + w, width), min(y + h, height)
    if (x1, y1, x2, y2) == (x, y, x + w, y + h):
        return False
    ann['bbox'] = [x1, y1, x2 - x1, y2 - y1]
    return True


def parse_args(argv=None):
    parser = argparse.ArgumentParser(
        description='Check the dataset of a config (annotations and image '
        'files) without training')
    parser.add_argument('config', help='config file path')
    parser.add_argument('--split', choices=['train', 'val', 'test'],
                        default='train', help='which dataloader\'s dataset')
    parser.add_argument('--fix', metavar='OUT.json',
                        help='write a cleaned copy of the (COCO) file')
    parser.add_argument('--max-examples', type=int, default=5,
                        help='examples printed per kind of problem')
    parser.add_argument('--workers', type=int,
                        default=min(4, os.cpu_count() or 1),
                        help='threads reading the images')
    parser.add_argument('--cfg-options', nargs='+', action=DictAction,
                        help='override config keys, e.g. '
                        'train_dataloader.dataset.ann_file=x.json')
    return parser.parse_args(argv)


def main(argv=None):
    """Prints the report; returns the exit status (1 on errors)."""
    args = parse_args(argv)
    if not osp.isfile(args.config):
        sys.exit(f'check_dataset: config file {args.config!r} does not '
                 'exist')
    cfg = Config.fromfile(args.config)
    if args.cfg_options:
        check_cfg_options(cfg, args.cfg_options, args.config)
        cfg.merge_from_dict(args.cfg_options)
    to_detkit_scope(cfg, source=args.config, log=False)
    loader = cfg.get(f'{args.split}_dataloader')
    if not loader or not loader.get('dataset'):
        sys.exit(f'check_dataset: {args.config} has no '
                 f'{args.split}_dataloader.dataset')
    checks = []
    # The datasets' own one-line summaries repeat what the report says.
    MMLogger.get_current_instance().setLevel(logging.WARNING)
    with DefaultScope.overwrite_default_scope('detkit'):
        for dataset_cfg in leaf_datasets(loader['dataset']):
            try:
                check = check_dataset(dataset_cfg, args.workers)
            except (OSError, ValueError, KeyError) as err:
                print(f'ERROR: {type(err).__name__}: {err}')
                return 1
            print(format_report(check, args.max_examples))
            checks.append(check)
    if args.fix:
        if len(checks) != 1 or checks[0].raw is None:
            sys.exit('check_dataset: --fix writes one COCO json; this '
                     f'split has {len(checks)} datasets or is not COCO')
        print(write_fixed(checks[0], args.fix))
    return int(any(check.has_errors for check in checks))


if __name__ == '__main__':
    sys.exit(main())
