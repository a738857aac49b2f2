"""Check images before running a detector on them (or before listing them
in a COCO json): which ones the loader refuses and which ones load but are
odd.

The reading and decoding are those of the data pipeline's
``LoadImageFromFile`` (:func:`~detkit.datasets.transforms.loading.
read_image_bytes` and ``imread_bytes``), so a file reported as unreadable
here is exactly one that inference or training would refuse:

- errors: missing, empty, truncated, not decodable, a folder, or not a
  regular file (a FIFO named ``.jpg`` would make ``open()`` wait forever);
- notes (the image loads, but probably not as its owner expects): an EXIF
  orientation that rotates the picture, grayscale / alpha / CMYK / 16-bit
  data converted to 8-bit BGR, a side below ``min_size`` pixels (training's
  default ``filter_cfg.min_size=32`` drops such images), an aspect ratio
  beyond ``max_aspect``.

``DetInferencer.check_inputs(inputs)``, ``demo/image_demo.py --check`` and
``tools/dataset_converters/images2coco.py --check`` print this report.
"""
from typing import List, NamedTuple

import cv2
import numpy as np

from ..datasets.transforms.loading import (BrokenImageError, imread_bytes,
                                           read_image_bytes)


class ImageProblem(NamedTuple):
    """One finding: ``severity`` is ``'error'`` (the loader refuses the
    file) or ``'note'`` (it loads, converted or unusual)."""
    name: str
    path: str
    severity: str
    problem: str


def check_image_file(path: str, min_size: int = 32,
                     max_aspect: float = 10.0) -> List[tuple]:
    """``[(severity, problem), ...]`` for one image file (empty: fine)."""
    try:
        data = read_image_bytes(path)
        img = imread_bytes(data, path, 'color')
    except BrokenImageError as err:
        return [('error', err.reason)]
    notes = []
    height, width = img.shape[:2]
    stored = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED)
    if stored is not None:
        if stored.shape[:2] != (height, width):
            notes.append(
                f'its EXIF orientation rotates it: stored as '
                f'{stored.shape[1]} x {stored.shape[0]}, loaded (as viewers '
                f'show it) as {width} x {height}; annotate it as loaded')
        channels = 1 if stored.ndim == 2 else stored.shape[2]
        if channels == 1:
            notes.append('grayscale: loaded as 3 equal channels')
        elif channels == 4:
            notes.append('CMYK JPEG: converted to BGR' if data[:2] ==
                         b'\xff\xd8' else 'has an alpha channel: dropped')
        if stored.dtype != np.uint8:
            notes.append(f'{stored.dtype} pixels: loaded as 8-bit')
    if min(width, height) < min_size:
        notes.append(f'{width} x {height}: a side below {min_size} px '
                     f'(training with filter_cfg min_size={min_size} drops '
                     'it; small objects may vanish)')
    if max(width, height) > max_aspect * min(width, height):
        notes.append(f'{width} x {height}: aspect ratio above {max_aspect:g}'
                     ' (resizing to the model scale squeezes one side)')
    return [('note', note) for note in notes]


class ImageCheckReport(list):
    """A list of :class:`ImageProblem` plus the number of images checked;
    ``str()`` is the printable report."""

    def __init__(self, problems, num_images):
        super().__init__(problems)
        self.num_images = num_images

    @property
    def errors(self) -> List[ImageProblem]:
        return [p for p in self if p.severity == 'error']

    @property
    def notes(self) -> List[ImageProblem]:
        return [p for p in self if p.severity == 'note']

    def __str__(self):
        bad = len({p.path for p in self.errors})
        odd = len({p.path for p in self.notes})
        lines = [f'checked {self.num_images} images: {bad} unreadable, '
                 f'{odd} with notes']
        for severity, title in (('error', 'unreadable (inference and '
                                  'training refuse these)'),
                                ('note', 'loads, but note')):
            found = [p for p in self if p.severity == severity]
            if found:
                lines.append(f'{title}:')
                lines += [f'  {p.path}: {p.problem}' for p in found]
        return '\n'.join(lines)


def check_images(inputs, min_size: int = 32,
                 max_aspect: float = 10.0) -> ImageCheckReport:
    """Check the image files among ``inputs`` (what
    :func:`~detkit.apis.det_inferencer.collect_inputs` takes: a path, a
    folder, a glob pattern, arrays, or a list of these; arrays are skipped:
    they are already decoded)."""
    from .det_inferencer import collect_inputs
    items = [(name, src) for name, src in collect_inputs(inputs)
             if isinstance(src, str)]
    problems = [
        ImageProblem(name, path, severity, problem) for name, path in items
        for severity, problem in check_image_file(path, min_size, max_aspect)
    ]
    return ImageCheckReport(problems, len(items))
