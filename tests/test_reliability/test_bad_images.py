"""Every kind of image file a dataset meets, through CocoDataset and its
pipeline: loaded correctly, or refused naming the file and the dataset
index (without ``skip_broken`` a training run stops on that error); with
``skip_broken=True`` a training run skips the unreadable ones and reports
them at the end of the epoch.

Decoding details per format are in
tests/test_datasets/test_transforms/test_loading.py."""
import json
import logging
import re
import struct

import cv2
import numpy as np
import pytest
from mmengine.logging import MMLogger
from PIL import Image
from reliability_toys import make_shapes, tiny_cfg
from reliability_toys import one_thread  # noqa: F401 (a fixture)

from detkit.datasets import CocoDataset, DatasetSampleError
from detkit.engine import DetRunner

pytestmark = pytest.mark.usefixtures('one_thread')

PIPELINE = [
    dict(type='LoadImageFromFile'),
    dict(type='LoadAnnotations', with_bbox=True),
    dict(type='Resize', scale=(64, 64), keep_ratio=True),
    dict(type='PackDetInputs')
]
RED_BGR = (0, 0, 255)


def _exif(jpeg: bytes, orientation: int) -> bytes:
    """Insert an EXIF APP1 segment holding only the orientation."""
    tiff = (b'MM\x00\x2a' + struct.pack('>I', 8) + struct.pack('>H', 1) +
            struct.pack('>HHIHH', 0x0112, 3, 1, orientation, 0) +
            struct.pack('>I', 0))
    payload = b'Exif\x00\x00' + tiff
    return (jpeg[:2] + b'\xff\xe1' + struct.pack('>H', len(payload) + 2) +
            payload + jpeg[2:])


def _red(h, w, dtype=np.uint8):
    img = np.zeros((h, w, 3), dtype)
    img[..., 2] = np.iinfo(dtype).max
    return img


def _files(root):
    """``{name: (bytes or None for missing, (json w, json h))}``: readable
    odd formats (all red, 16 x 8 as viewers show them), then broken
    files."""
    jpeg = cv2.imencode('.jpg', _red(8, 16),
                        [cv2.IMWRITE_JPEG_QUALITY, 100])[1].tobytes()
    png = cv2.imencode('.png', _red(8, 16))[1].tobytes()
    Image.new('CMYK', (16, 8), (0, 255, 255, 0)).save(root / 'cmyk.jpg',
                                                      quality=100)
    # Stored 8 x 16 (portrait); orientation 6 shows it rotated to 16 x 8.
    portrait = cv2.imencode('.jpg', _red(16, 8),
                            [cv2.IMWRITE_JPEG_QUALITY, 100])[1].tobytes()
    gray = np.full((8, 16), 76, np.uint8)  # red's luma: 0.299 * 255
    # A damaged header (frame size zeroed) makes a JPEG undecodable. (Damage
    # inside the compressed pixels is not detectable: libjpeg decodes what
    # it can and only prints "Corrupt JPEG data" on stderr.)
    sof = jpeg.find(b'\xff\xc0')
    corrupt = jpeg[:sof + 5] + b'\x00' * 4 + jpeg[sof + 9:]
    return {
        'plain.jpg': (jpeg, (16, 8)),
        'gray.png': (cv2.imencode('.png', gray)[1].tobytes(), (16, 8)),
        'rgba.png': (cv2.imencode('.png', np.dstack(
            [_red(8, 16), np.full((8, 16), 9, np.uint8)]))[1].tobytes(),
                     (16, 8)),
        'deep.png': (cv2.imencode('.png', _red(8, 16, dtype=np.uint16))[1]
                     .tobytes(), (16, 8)),
        'cmyk.jpg': ((root / 'cmyk.jpg').read_bytes(), (16, 8)),
        'exif.jpg': (_exif(portrait, 6), (16, 8)),
        # broken
        'exif_stored_size.jpg': (_exif(portrait, 6), (8, 16)),
        'corrupt.jpg': (corrupt, (16, 8)),
        'cut.jpg': (jpeg[:len(jpeg) // 2], (16, 8)),
        'cut.png': (png[:len(png) // 2], (16, 8)),
        'empty.jpg': (b'', (16, 8)),
        'missing.jpg': (None, (16, 8)),
    }


@pytest.fixture
def odd_root(tmp_path):
    files = _files(tmp_path)
    images, annotations = [], []
    for i, (name, (data, (w, h))) in enumerate(files.items()):
        if data is not None:
            (tmp_path / name).write_bytes(data)
        images.append(dict(id=i + 1, file_name=name, width=w, height=h))
        annotations.append(dict(id=i + 1, image_id=i + 1, category_id=1,
                                bbox=[2, 1, 4, 2], area=8, iscrowd=0))
    coco = dict(images=images, annotations=annotations,
                categories=[dict(id=1, name='thing')])
    (tmp_path / 'ann.json').write_text(json.dumps(coco))
    return tmp_path, list(files)


def _dataset(root, **kwargs):
    return CocoDataset(ann_file='ann.json', data_root=str(root),
                       data_prefix=dict(img=''), pipeline=PIPELINE,
                       metainfo=dict(classes=('thing', )), **kwargs)


REASONS = {
    'exif_stored_size.jpg': ('ValueError: .*decodes to width x height = 16 '
                             'x 8, but its annotation says 8 x 16.*'
                             "color_type='color_ignore_orientation'"),
    'corrupt.jpg': r'OpenCV cannot decode its \d+ bytes \(corrupt file',
    'cut.jpg': 'JPEG data ends before its end-of-image marker',
    'cut.png': 'PNG data has no IEND chunk',
    'empty.jpg': r'the file is empty \(0 bytes\)',
    'missing.jpg': 'the file does not exist',
}


def test_every_kind_of_file_is_loaded_or_refused_by_name(odd_root):
    root, names = odd_root
    dataset = _dataset(root)
    for index, name in enumerate(names):
        if name in REASONS:
            with pytest.raises(DatasetSampleError) as err:
                dataset[index]
            assert str(err.value).startswith(
                f'dataset index {index} (image {root / name}): ')
            assert err.value.index == index
            assert err.value.img_path == str(root / name)
            assert re.search(REASONS[name], str(err.value)), str(err.value)
            continue
        sample = dataset[index]
        img, data_sample = sample['inputs'], sample['data_samples']
        # 16 x 8 -> 64 x 32: BGR uint8, every pixel red (JPEG/CMYK within
        # a few levels; gray stays gray).
        assert img.shape == (3, 32, 64) and str(img.dtype) == 'torch.uint8'
        expected = (76, 76, 76) if name == 'gray.png' else RED_BGR
        assert np.abs(img[:, 4:-4, 4:-4].float().mean((1, 2)).numpy() -
                      expected).max() <= 3, name
        assert data_sample.ori_shape == (8, 16)
        assert data_sample.gt_instances.bboxes.tolist() == [[8, 4, 24, 12]]
    assert len(REASONS) == 6 and len(names) == 12


def _broken_run_cfg(tmp_path, work_dir, **overrides):
    root = make_shapes(tmp_path / 'shapes')
    images = tmp_path / 'shapes' / 'images'
    (images / 'train_000001.jpg').write_bytes(b'')
    data = (images / 'train_000003.jpg').read_bytes()
    (images / 'train_000003.jpg').write_bytes(data[:len(data) // 2])
    (images / 'train_000005.jpg').unlink()
    (images / 'train_000006.jpg').write_bytes(b'not an image')
    return tiny_cfg(root, work_dir, train_cfg=dict(max_epochs=1,
                                                   val_interval=2),
                    log_level='WARNING', **overrides)


def test_skip_broken_trains_and_reports_at_the_end_of_the_epoch(tmp_path):
    cfg = _broken_run_cfg(
        tmp_path, tmp_path / 'work',
        train_dataloader=dict(num_workers=1,
                              dataset=dict(skip_broken=True)))
    runner = DetRunner.from_cfg(cfg)
    warnings = []
    handler = logging.Handler(logging.WARNING)
    handler.emit = lambda record: warnings.append(record.getMessage())
    logger = MMLogger.get_current_instance()
    logger.addHandler(handler)
    try:
        runner.train()
    finally:
        logger.removeHandler(handler)
    assert runner.iter == 4 and (tmp_path / 'work' / 'epoch_1.pth').exists()
    reports = [w for w in warnings if 'broken image(s) skipped' in w]
    assert len(reports) == 1  # once, at the end of the epoch
    lines = reports[0].splitlines()
    assert lines[0] == ('CocoDataset: 4 broken image(s) skipped '
                        '(skip_broken=True) out of 8:')
    images = tmp_path / 'shapes' / 'images'
    assert sorted(lines[1:]) == [
        f'  index 1: {images}/train_000001.jpg (the file is empty '
        '(0 bytes))',
        f'  index 3: {images}/train_000003.jpg (the JPEG data ends before '
        'its end-of-image marker (truncated file))',
        f'  index 5: {images}/train_000005.jpg (the file does not exist)',
        f'  index 6: {images}/train_000006.jpg (OpenCV cannot decode its 12 '
        'bytes (corrupt file or not an image format OpenCV reads))',
    ]
