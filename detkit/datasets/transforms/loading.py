"""Read the image file and the dataset's annotations into the results dict.

``LoadImageFromFile`` decodes with ``cv2.imdecode`` exactly as mmcv does
with the ``cv2`` backend; with the default ``color_type='color'`` this means:

- the result is BGR ``uint8`` ``(H, W, 3)``;
- the EXIF orientation is applied (the picture is rotated as a viewer
  shows it);
- grayscale becomes 3 equal channels, an alpha channel is dropped, a 16-bit
  PNG becomes 8-bit (``v >> 8``) and a CMYK JPEG is converted to BGR.

A file that is missing, empty, truncated or not decodable, or a path that
is not a regular file (a folder, a FIFO, a device: reading one could block
forever), raises :class:`BrokenImageError` naming the file, so that a
dataset can report or skip it (``skip_broken``).
An image whose decoded size differs from the ``width``/``height`` of its
annotation (a dataset passes them) raises ``ValueError`` naming both sizes
(its ``decoded`` and ``annotated`` attributes hold them as ``(width,
height)``, ``swapped`` says whether they are transposed): its boxes would
be in another frame (typically an EXIF rotation).
"""
import os
import os.path as osp
import stat
from typing import Optional

import cv2
import numpy as np
from mmengine import fileio

from detkit.registry import TRANSFORMS
from .base import BaseTransform, require_keys

_COLOR_FLAGS = {
    'color': cv2.IMREAD_COLOR,
    'grayscale': cv2.IMREAD_GRAYSCALE,
    'unchanged': cv2.IMREAD_UNCHANGED,
    'color_ignore_orientation':
    cv2.IMREAD_IGNORE_ORIENTATION | cv2.IMREAD_COLOR,
    'grayscale_ignore_orientation':
    cv2.IMREAD_IGNORE_ORIENTATION | cv2.IMREAD_GRAYSCALE,
}


class BrokenImageError(OSError):
    """An image file that cannot be read: missing, empty, truncated or
    corrupt. ``path`` is the file and ``reason`` says what is wrong."""

    def __init__(self, path: str, reason: str):
        super().__init__(f'cannot load image {path}: {reason}')
        self.path = path
        self.reason = reason


def _truncation_problem(data: bytes) -> Optional[str]:
    """Why ``data`` looks cut short, or None.

    Depending on the OpenCV build, a JPEG that ends early decodes with a
    grey bottom and only a warning on stderr, so check the container: a
    complete JPEG has an end-of-image marker after its last start-of-scan
    (entropy-coded data cannot contain ``FF D9``; trailers after the end
    marker are allowed); a complete PNG has an ``IEND`` chunk.
    """
    if data[:2] == b'\xff\xd8':
        last_sos = data.rfind(b'\xff\xda')
        if last_sos < 0 or data.find(b'\xff\xd9', last_sos) < 0:
            return 'the JPEG data ends before its end-of-image marker ' \
                   '(truncated file)'
    elif data[:8] == b'\x89PNG\r\n\x1a\n' and data.rfind(b'IEND') < 0:
        return 'the PNG data has no IEND chunk (truncated file)'
    return None


def imread_bytes(data: bytes, path: str, color_type: str = 'color'):
    """Decode ``data`` (the bytes of the file ``path``) with OpenCV.

    Returns an ``(H, W, 3)`` BGR array for the colour flags (``(H, W)``
    for grayscale). Raises :class:`BrokenImageError` when the bytes are not
    a complete image.
    """
    if len(data) == 0:
        raise BrokenImageError(path, 'the file is empty (0 bytes)')
    problem = _truncation_problem(data)
    if problem:
        raise BrokenImageError(path, problem)
    img = cv2.imdecode(np.frombuffer(data, np.uint8), _COLOR_FLAGS[color_type])
    if img is None:
        raise BrokenImageError(
            path, f'OpenCV cannot decode its {len(data)} bytes (corrupt '
            'file or not an image format OpenCV reads)')
    return img


def _check_annotated_size(results: dict, hw, path: str,
                          color_type: str) -> None:
    """Refuse an image whose decoded size differs from the ``width`` /
    ``height`` its annotation file gives (when the dataset passes them):
    its boxes are then in another frame. The usual cause is an EXIF
    orientation that the annotation tool ignored or applied differently.
    """
    width, height = results.get('width'), results.get('height')
    if width is None or height is None or (
            int(round(width)), int(round(height))) == (hw[1], hw[0]):
        return
    msg = (f'{path} decodes to width x height = {hw[1]} x {hw[0]}, but its '
           f'annotation says {width} x {height}, so its boxes do not fit '
           'the image.')
    if (int(round(width)), int(round(height))) == (hw[0], hw[1]):
        msg += (' Width and height are swapped, as with an EXIF orientation '
                'of 90 or 270 degrees')
        if 'ignore_orientation' in color_type:
            msg += (", which color_type='" + color_type + "' does not "
                    'apply: if the boxes were drawn on the picture as '
                    "viewers show it, use color_type='color'; otherwise "
                    'swap width and height in the annotation file.')
        else:
            msg += (', which LoadImageFromFile applies (as viewers and '
                    'mmdetection do): if the boxes were drawn on the stored '
                    "(unrotated) pixels, set color_type='color_ignore_"
                    "orientation' in LoadImageFromFile; if they were drawn "
                    'on the picture as viewers show it, swap width and '
                    'height in the annotation file.')
    else:
        msg += (' Fix width/height in the annotation file, or re-annotate '
                'the image if the file was replaced or resized.')
    error = ValueError(msg)
    error.decoded, error.annotated = (hw[1], hw[0]), (width, height)
    error.swapped = error.decoded == (int(round(height)), int(round(width)))
    raise error


def read_image_bytes(path: str, backend_args: Optional[dict] = None) -> bytes:
    """The bytes of the image file ``path`` (through mmengine's file
    backends), or :class:`BrokenImageError` saying why not."""
    if '://' not in str(path):
        try:
            mode = os.stat(path).st_mode
        except OSError:
            mode = None  # missing: fileio.get below says so
        if mode is not None and not stat.S_ISREG(mode) and \
                not stat.S_ISDIR(mode):
            # open() on a FIFO blocks until a writer appears.
            kind = ('a FIFO (named pipe)' if stat.S_ISFIFO(mode) else
                    'a device' if stat.S_ISCHR(mode) or stat.S_ISBLK(mode)
                    else 'a socket' if stat.S_ISSOCK(mode) else 'special')
            raise BrokenImageError(
                path, f'not a regular file but {kind}; replace it with '
                'the image file')
    try:
        return fileio.get(path, backend_args=backend_args)
    except FileNotFoundError:
        hint = ''
        if not osp.isdir(osp.dirname(path) or '.'):
            hint = (f' (its folder {osp.dirname(path)} does not exist '
                    'either: check data_root and data_prefix)')
        raise BrokenImageError(path, f'the file does not exist{hint}')
    except IsADirectoryError:
        raise BrokenImageError(path, 'the path is a folder')


@TRANSFORMS.register_module()
class LoadImageFromFile(BaseTransform):
    """Load ``results['img_path']`` into ``results['img']``.

    Sets ``img`` (``(H, W, 3)`` BGR uint8, float32 with ``to_float32``),
    ``img_shape`` and ``ori_shape`` (both ``(H, W)``).

    Args:
        to_float32: convert the decoded image to float32.
        color_type: ``'color'``, ``'grayscale'``, ``'unchanged'``,
            ``'color_ignore_orientation'`` or
            ``'grayscale_ignore_orientation'`` (OpenCV imread flags).
        imdecode_backend: only ``'cv2'``.
        ignore_empty: return None (the dataset fetches another sample)
            instead of raising when the file cannot be loaded.
        backend_args: mmengine file backend arguments (e.g. for S3).
    """

    def __init__(self,
                 to_float32: bool = False,
                 color_type: str = 'color',
                 imdecode_backend: str = 'cv2',
                 ignore_empty: bool = False,
                 backend_args: Optional[dict] = None):
        if color_type not in _COLOR_FLAGS:
            raise ValueError(f'LoadImageFromFile: color_type must be one of '
                             f'{sorted(_COLOR_FLAGS)}, got {color_type!r}')
        if imdecode_backend != 'cv2':
            raise ValueError(
                "LoadImageFromFile: only imdecode_backend='cv2' is "
                f'supported (got {imdecode_backend!r}); remove the key from '
                'the config to use OpenCV.')
        self.to_float32 = to_float32
        self.color_type = color_type
        self.imdecode_backend = imdecode_backend
        self.ignore_empty = ignore_empty
        self.backend_args = backend_args

    def transform(self, results: dict) -> Optional[dict]:
        require_keys(results, ['img_path'], 'LoadImageFromFile')
        path = results['img_path']
        try:
            img = imread_bytes(self._read(path), path, self.color_type)
        except BrokenImageError:
            if self.ignore_empty:
                return None
            raise
        _check_annotated_size(results, img.shape[:2], path, self.color_type)
        if self.to_float32:
            img = img.astype(np.float32)
        results['img'] = img
        results['img_shape'] = img.shape[:2]
        results['ori_shape'] = img.shape[:2]
        return results

    def _read(self, path: str) -> bytes:
        return read_image_bytes(path, self.backend_args)


@TRANSFORMS.register_module()
class LoadImageFromNDArray(LoadImageFromFile):
    """Take an image already in memory (``results['img']``, an ``(H, W, 3)``
    BGR uint8 array, as ``cv2.imread`` gives) instead of reading a file;
    used by the inference APIs. ``img_path`` becomes None."""

    def transform(self, results: dict) -> dict:
        require_keys(results, ['img'], 'LoadImageFromNDArray')
        img = results['img']
        if not isinstance(img, np.ndarray) or img.ndim not in (2, 3):
            raise TypeError('LoadImageFromNDArray expects an (H, W, 3) or '
                            '(H, W) numpy array in results["img"], got '
                            f'{type(img).__name__}')
        if img.ndim == 2:
            img = np.repeat(img[..., None], 3, axis=2)
        if self.to_float32:
            img = img.astype(np.float32)
        results['img'] = img
        results.setdefault('img_path', None)
        results['img_shape'] = img.shape[:2]
        results['ori_shape'] = img.shape[:2]
        return results


@TRANSFORMS.register_module()
class LoadAnnotations(BaseTransform):
    """Turn ``results['instances']`` into arrays.

    Sets ``gt_bboxes`` float32 ``(N, 4)`` x1y1x2y2 pixels,
    ``gt_ignore_flags`` bool ``(N,)`` and (``with_label``)
    ``gt_bboxes_labels`` int64 ``(N,)``. Boxes stay plain arrays: detkit has
    no box classes, so ``box_type`` may only be None or ``'hbox'``.
    Masks and semantic maps are not supported.
    """

    def __init__(self,
                 with_bbox: bool = True,
                 with_label: bool = True,
                 with_mask: bool = False,
                 with_seg: bool = False,
                 poly2mask: bool = True,
                 box_type: Optional[str] = None,
                 reduce_zero_label: bool = False,
                 ignore_index: int = 255,
                 imdecode_backend: str = 'cv2',
                 backend_args: Optional[dict] = None):
        if with_mask or with_seg:
            raise NotImplementedError(
                'LoadAnnotations: detkit detects boxes only; set '
                'with_mask=False and with_seg=False in the pipeline config.')
        if box_type not in (None, 'hbox'):
            raise ValueError(
                "LoadAnnotations: box_type must be None or 'hbox' (boxes "
                f'are plain float32 arrays in detkit), got {box_type!r}')
        self.with_bbox = with_bbox
        self.with_label = with_label
        self.with_mask = with_mask
        self.with_seg = with_seg
        self.poly2mask = poly2mask
        self.box_type = box_type
        self.reduce_zero_label = reduce_zero_label
        self.ignore_index = ignore_index
        self.imdecode_backend = imdecode_backend
        self.backend_args = backend_args

    def transform(self, results: dict) -> dict:
        if not (self.with_bbox or self.with_label):
            return results
        require_keys(results, ['instances'], 'LoadAnnotations')
        instances = results['instances']
        if self.with_bbox:
            results['gt_bboxes'] = np.array(
                [inst['bbox'] for inst in instances],
                dtype=np.float32).reshape(-1, 4)
            results['gt_ignore_flags'] = np.array(
                [inst.get('ignore_flag', 0) for inst in instances],
                dtype=bool).reshape(-1)
        if self.with_label:
            results['gt_bboxes_labels'] = np.array(
                [inst['bbox_label'] for inst in instances],
                dtype=np.int64).reshape(-1)
        return results
