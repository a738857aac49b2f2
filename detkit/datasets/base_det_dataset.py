"""What every detection dataset shares: the pipeline, filtering, and what
happens when an image cannot be read.

A subclass's ``load_data_list`` returns one dict per image::

    dict(img_path=str, img_id=int or str, width=int, height=int,
         instances=[dict(bbox=[x1, y1, x2, y2], bbox_label=int,
                         ignore_flag=0 or 1), ...])

with boxes in pixels of the original image (width = x2 - x1).

Parsing reports what it finds through an :class:`AnnotationAudit`: datasets
stop at the first structural error and log one line of counts;
``tools/misc/check_dataset.py`` uses the same parsing with a collecting
audit to list every problem and to write a cleaned copy.
"""
import atexit
import json
import logging
import os
import os.path as osp
import tempfile
import uuid
from collections import Counter, defaultdict
from typing import Callable, List, Optional, Sequence, Tuple, Union

from mmengine.dataset import BaseDataset
from mmengine.logging import print_log

from detkit.registry import TRANSFORMS


class DatasetSampleError(RuntimeError):
    """The pipeline failed on one sample; the message says which index and
    image. ``index``, ``img_path`` and ``__cause__`` (the original error)
    are kept for code that wants to inspect them.

    The message is the only required argument, so that a DataLoader worker
    can re-raise the error in the main process with the same type.
    """

    def __init__(self, message: str, index: Optional[int] = None,
                 img_path: Optional[str] = None):
        super().__init__(message)
        self.index = index
        self.img_path = img_path

    @classmethod
    def wrap(cls, index: int, img_path: str, cause: BaseException,
             hint: str = '') -> 'DatasetSampleError':
        return cls(
            f'dataset index {index} (image {img_path}): '
            f'{type(cause).__name__}: {cause}{hint}', index, img_path)


class AnnotationAudit:
    """What parsing an annotation file found, by kind.

    ``error(kind, message, **where)``: a structural problem (duplicate ids,
    an image without a size, a bbox that is not four numbers, nothing left
    to train on). With ``strict=True`` (what datasets use) it raises
    ``ValueError(message)`` at once; with ``strict=False``
    (``check_dataset.py``) it is recorded and parsing goes on, leaving the
    offending entry out.
    ``skip(kind, **where)``: an annotation or image the dataset leaves out;
    ``note(kind, **where)``: something it keeps, fixed up or as it is.

    ``counts[kind]`` counts every call; with ``strict=False``
    ``records[kind]`` also keeps ``(message, where)`` of each, ``where``
    saying which entry (``image_index``, ``ann_index``, ``img_id``, ...).
    """

    def __init__(self, strict: bool = True):
        self.strict = strict
        self.counts = Counter()
        self.severity = {}
        self.records = defaultdict(list)

    def error(self, kind: str, message: str, **where) -> None:
        if self.strict:
            raise ValueError(message)
        self._add('error', kind, message, where)

    def skip(self, kind: str, message: str = '', **where) -> None:
        self._add('skip', kind, message, where)

    def note(self, kind: str, message: str = '', **where) -> None:
        self._add('note', kind, message, where)

    def _add(self, severity, kind, message, where):
        self.counts[kind] += 1
        self.severity[kind] = severity
        if not self.strict:
            self.records[kind].append((message, where))


def has_usable_box(info: dict) -> bool:
    """Whether an image (a data_list entry) has a box that is not ignored
    (crowd, difficult): ``filter_empty_gt`` keeps only these."""
    return any(inst['ignore_flag'] == 0 for inst in info['instances'])


class _BrokenImageLog:
    """Broken images met by a dataset, in any process.

    DataLoader workers hold copies of the dataset, so an in-memory list
    would stay empty in the main process where the end-of-epoch hook asks.
    Each record is appended as one JSON line to a temporary file shared by
    the copies (one small ``O_APPEND`` write each, so concurrent workers do
    not interleave). The process that created the log removes the file at
    exit.
    """

    def __init__(self):
        self.path = osp.join(
            tempfile.gettempdir(),
            f'detkit-broken-images-{os.getpid()}-{uuid.uuid4().hex}.jsonl')
        atexit.register(self._remove, os.getpid(), self.path)

    @staticmethod
    def _remove(owner_pid: int, path: str) -> None:
        if os.getpid() == owner_pid and osp.exists(path):
            os.remove(path)

    def add(self, index: int, img_path: str, reason: str) -> None:
        line = json.dumps([index, img_path, reason]) + '\n'
        with open(self.path, 'a') as f:
            f.write(line)

    def entries(self) -> List[Tuple[int, str, str]]:
        if not osp.exists(self.path):
            return []
        seen = dict()
        with open(self.path) as f:
            for line in f:
                index, img_path, reason = json.loads(line)
                seen.setdefault((index, img_path), reason)
        return [(i, p, r) for (i, p), r in seen.items()]


class BaseDetDataset(BaseDataset):
    """mmengine's :class:`~mmengine.dataset.BaseDataset` plus:

    - the pipeline is built with detkit's ``TRANSFORMS``, so it works
      without setting a default scope;
    - ``filter_cfg=dict(filter_empty_gt=True, min_size=32)``: drop images
      without a non-ignored box, and images whose shorter side is below
      ``min_size``. Nothing is filtered in ``test_mode`` (evaluation must
      see every image);
    - errors in the pipeline name the dataset index and image path;
    - ``skip_broken=True`` (training only): an image that cannot be read
      (missing, empty, truncated, corrupt: any ``OSError``) is skipped with
      a warning and recorded in :attr:`broken_images`, and another index is
      fetched; :meth:`report_broken` summarises them. In ``test_mode`` a
      broken image always raises.

    Args are those of mmengine's BaseDataset plus ``backend_args`` (file
    backend for annotation files), ``skip_broken`` and ``return_classes``
    (add ``text=classes`` to each sample, as mmdetection does).
    """

    FILTER_KEYS = ('filter_empty_gt', 'min_size')

    def __init__(self,
                 ann_file: str = '',
                 metainfo: Optional[dict] = None,
                 data_root: str = '',
                 data_prefix: dict = dict(img=''),
                 filter_cfg: Optional[dict] = None,
                 indices: Optional[Union[int, Sequence[int]]] = None,
                 serialize_data: bool = True,
                 pipeline: Sequence[Union[dict, Callable]] = (),
                 test_mode: bool = False,
                 lazy_init: bool = False,
                 max_refetch: int = 1000,
                 backend_args: Optional[dict] = None,
                 skip_broken: bool = False,
                 return_classes: bool = False):
        self.backend_args = backend_args
        self.skip_broken = skip_broken
        self.return_classes = return_classes
        self._broken_log = _BrokenImageLog()
        # check_dataset.py swaps in a collecting audit (lazy_init=True).
        self.audit = AnnotationAudit(strict=True)
        unknown = set(filter_cfg or {}) - set(self.FILTER_KEYS)
        if unknown:
            raise KeyError(f'{type(self).__name__}: filter_cfg has unknown '
                           f'keys {sorted(unknown)}; it accepts '
                           f'{", ".join(self.FILTER_KEYS)}')
        pipeline = [
            TRANSFORMS.build(t) if isinstance(t, dict) else t
            for t in pipeline
        ]
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
            max_refetch=max_refetch)

    # ----------------------------------------------------------- filtering
    def filter_data(self) -> List[dict]:
        if not self.data_list:
            self.audit.error(
                'no_images', f'{type(self).__name__}: {self.ann_file} lists '
                'no images, so there is nothing to train or test on. Check '
                'ann_file and data_root.')
        if self.test_mode or not self.filter_cfg:
            return self.data_list
        filter_empty_gt = self.filter_cfg.get('filter_empty_gt', False)
        min_size = self.filter_cfg.get('min_size', 0)
        kept, empty, small = [], 0, 0
        for info in self.data_list:
            if filter_empty_gt and not has_usable_box(info):
                empty += 1
                self.audit.skip('filtered_empty', img_id=info['img_id'])
            elif min(info['width'], info['height']) < min_size:
                small += 1
                self.audit.skip('filtered_small', img_id=info['img_id'])
            else:
                kept.append(info)
        if self.data_list and not kept:
            boxes = sum(len(info['instances']) for info in self.data_list)
            self.audit.error(
                'all_filtered',
                f'{type(self).__name__} ({self.ann_file}): all '
                f'{len(self.data_list)} images were filtered out, nothing is '
                f'left to train on: {empty} have no non-ignored box '
                f'(filter_cfg.filter_empty_gt={filter_empty_gt}) and {small} '
                f'a side below filter_cfg.min_size={min_size}. The file '
                f'gives {boxes} usable boxes in all'
                + (' (its annotations list is empty or every annotation was '
                   'skipped: is it an unlabeled file, e.g. from '
                   'images2coco.py?)' if not boxes else '') +
                '. Point ann_file to the labeled annotations, or set '
                'filter_cfg=dict(filter_empty_gt=False) to train on images '
                'without boxes (as background only).')
        if empty or small:
            print_log(
                f'{type(self).__name__} ({self.ann_file}): kept '
                f'{len(kept)} of {len(self.data_list)} images; dropped '
                f'{empty} without a non-ignored box (filter_empty_gt) and '
                f'{small} with a side below min_size={min_size}',
                logger='current')
        return kept

    def get_cat_ids(self, idx: int) -> List[int]:
        """The labels (0-based class indices) of the boxes of image
        ``idx``, one per box, ignored ones included."""
        return [inst['bbox_label'] for inst in self.get_data_info(idx)[
            'instances']]

    # ----------------------------------------------------- fetching samples
    def prepare_data(self, idx: int):
        data_info = self.get_data_info(idx)
        if self.return_classes:
            data_info['text'] = self.metainfo['classes']
            data_info['custom_entities'] = True
        return self.pipeline(data_info)

    def _img_path(self, idx: int) -> str:
        try:
            return self.get_data_info(idx).get('img_path', '?')
        except Exception:  # the index itself may be what is wrong
            return '?'

    def __getitem__(self, idx: int) -> dict:
        if not self._fully_initialized:
            self.full_init()
        for _ in range(self.max_refetch + 1):
            try:
                data = self.prepare_data(idx)
            except OSError as err:
                if self.test_mode or not self.skip_broken:
                    hint = ('' if self.test_mode else
                            '. Fix or remove the file, or set '
                            'skip_broken=True in the training dataset config'
                            ' to skip unreadable images.')
                    raise DatasetSampleError.wrap(
                        idx, self._img_path(idx), err, hint) from err
                self._skip_broken(idx, err)
                idx = self._rand_another()
                continue
            except Exception as err:
                raise DatasetSampleError.wrap(idx, self._img_path(idx),
                                              err) from err
            if data is not None:
                return data
            if self.test_mode:
                raise DatasetSampleError.wrap(
                    idx, self._img_path(idx),
                    RuntimeError('the test pipeline returned None (a '
                                 'transform dropped the sample)'))
            idx = self._rand_another()
        raise RuntimeError(
            f'{type(self).__name__}: no usable sample after '
            f'{self.max_refetch} refetches (last index {idx}); check the '
            'image paths and the pipeline. ' + self.report_broken())

    def _skip_broken(self, idx: int, err: OSError) -> None:
        path = self._img_path(idx)
        reason = getattr(err, 'reason', None) or f'{type(err).__name__}: ' \
                                                 f'{err}'
        self._broken_log.add(idx, path, reason)
        print_log(f'skipping broken image at dataset index {idx} ({path}): '
                  f'{reason}', logger='current', level=logging.WARNING)

    @property
    def broken_images(self) -> List[Tuple[int, str, str]]:
        """``(index, img_path, reason)`` of every image skipped so far by
        this dataset or its DataLoader workers, each once."""
        return self._broken_log.entries()

    def report_broken(self) -> str:
        """A summary of :attr:`broken_images` for the log; ``''`` when no
        image was skipped."""
        broken = self.broken_images
        if not broken:
            return ''
        lines = [f'{type(self).__name__}: {len(broken)} broken image(s) '
                 f'skipped (skip_broken=True) out of {len(self)}:']
        lines += [f'  index {i}: {p} ({r})' for i, p, r in broken]
        return '\n'.join(lines)
