"""LoadImageFromFile on every kind of file it may meet, LoadAnnotations."""
import struct

import cv2
import numpy as np
import pytest

from detkit.datasets.transforms import (BrokenImageError, LoadAnnotations,
                                        LoadImageFromFile)


def _quadrants(h=32, w=48):
    """BGR image: top-left blue, top-right green, bottom-left red,
    bottom-right white."""
    img = np.zeros((h, w, 3), np.uint8)
    img[:h // 2, :w // 2] = (255, 0, 0)
    img[:h // 2, w // 2:] = (0, 255, 0)
    img[h // 2:, :w // 2] = (0, 0, 255)
    img[h // 2:, w // 2:] = (255, 255, 255)
    return img


def _with_exif_orientation(jpeg: bytes, orientation: int) -> bytes:
    """Insert a minimal EXIF APP1 segment holding only the orientation."""
    tiff = (b'MM\x00\x2a' + struct.pack('>I', 8) + struct.pack('>H', 1) +
            struct.pack('>HHIHH', 0x0112, 3, 1, orientation, 0) +
            struct.pack('>I', 0))
    payload = b'Exif\x00\x00' + tiff
    return (jpeg[:2] + b'\xff\xe1' + struct.pack('>H', len(payload) + 2) +
            payload + jpeg[2:])


def _load(path, **kwargs):
    return LoadImageFromFile(**kwargs)(dict(img_path=str(path)))


def test_png_round_trip_is_exact_bgr_uint8(tmp_path):
    img = np.arange(2 * 3 * 3, dtype=np.uint8).reshape(2, 3, 3) * 10
    cv2.imwrite(str(tmp_path / 'a.png'), img)
    results = _load(tmp_path / 'a.png')
    assert results['img'].dtype == np.uint8
    np.testing.assert_array_equal(results['img'], img)
    assert results['img_shape'] == (2, 3)
    assert results['ori_shape'] == (2, 3)
    # to_float32 keeps the values
    results = _load(tmp_path / 'a.png', to_float32=True)
    assert results['img'].dtype == np.float32
    assert results['img'][1, 2, 2] == 170.0


@pytest.mark.parametrize('orientation, shape, corners', [
    (1, (32, 48), ['blue', 'green', 'red', 'white']),
    (3, (32, 48), ['white', 'red', 'green', 'blue']),
    (6, (48, 32), ['red', 'blue', 'white', 'green']),  # rotate 90 cw
    (8, (48, 32), ['green', 'white', 'blue', 'red']),  # rotate 90 ccw
])
def test_exif_orientation_is_applied(tmp_path, orientation, shape, corners):
    ok, enc = cv2.imencode('.jpg', _quadrants(),
                           [cv2.IMWRITE_JPEG_QUALITY, 100])
    path = tmp_path / 'exif.jpg'
    path.write_bytes(_with_exif_orientation(enc.tobytes(), orientation))
    img = _load(path)['img']
    assert img.shape == shape + (3, )
    bgr = dict(blue=(255, 0, 0), green=(0, 255, 0), red=(0, 0, 255),
               white=(255, 255, 255))
    got = [img[4, 4], img[4, -5], img[-5, 4], img[-5, -5]]
    for pixel, name in zip(got, corners):
        np.testing.assert_allclose(pixel, bgr[name], atol=3)
    # The *_ignore_orientation colour type keeps the stored layout.
    stored = _load(path, color_type='color_ignore_orientation')['img']
    assert stored.shape == (32, 48, 3)


def test_grayscale_becomes_three_equal_channels(tmp_path):
    gray = np.array([[0, 100], [200, 255]], np.uint8)
    cv2.imwrite(str(tmp_path / 'g.png'), gray)
    img = _load(tmp_path / 'g.png')['img']
    assert img.shape == (2, 2, 3)
    for c in range(3):
        np.testing.assert_array_equal(img[..., c], gray)
    # grayscale colour type keeps one channel
    assert _load(tmp_path / 'g.png', color_type='grayscale')['img'].shape \
        == (2, 2)


def test_rgba_png_drops_alpha(tmp_path):
    rgba = np.zeros((2, 2, 4), np.uint8)
    rgba[..., :3] = (10, 20, 30)
    rgba[..., 3] = [[0, 255], [128, 7]]  # alpha must not blend the colour
    cv2.imwrite(str(tmp_path / 'rgba.png'), rgba)
    img = _load(tmp_path / 'rgba.png')['img']
    assert img.shape == (2, 2, 3)
    np.testing.assert_array_equal(img.reshape(-1, 3), [[10, 20, 30]] * 4)


def test_16bit_png_becomes_8bit_by_shifting(tmp_path):
    img16 = np.array([[[0, 255, 256], [1000, 40000, 65535]]], np.uint16)
    cv2.imwrite(str(tmp_path / 'a16.png'), img16)
    img = _load(tmp_path / 'a16.png')['img']
    assert img.dtype == np.uint8
    # v >> 8: 255 -> 0, 256 -> 1, 1000 -> 3, 40000 -> 156, 65535 -> 255
    np.testing.assert_array_equal(img, [[[0, 0, 1], [3, 156, 255]]])


def test_cmyk_jpeg_is_converted_to_bgr(tmp_path):
    image_module = pytest.importorskip('PIL.Image')
    # CMYK (0, 255, 255, 0) is pure red.
    image_module.new('CMYK', (8, 8), (0, 255, 255, 0)).save(
        tmp_path / 'cmyk.jpg', quality=100)
    img = _load(tmp_path / 'cmyk.jpg')['img']
    assert img.shape == (8, 8, 3)
    np.testing.assert_allclose(img[4, 4], (0, 0, 255), atol=3)


def _jpeg_bytes():
    rng = np.random.RandomState(0)
    img = (rng.rand(32, 32, 3) * 255).astype(np.uint8)
    return cv2.imencode('.jpg', img)[1].tobytes()


@pytest.mark.parametrize('name, content, reason', [
    ('missing.jpg', None, 'does not exist'),
    ('empty.jpg', b'', 'empty'),
    ('cut.jpg', 'half-jpeg', 'truncated'),
    ('no_eoi.jpg', 'jpeg-without-eoi', 'truncated'),
    ('cut.png', 'half-png', 'truncated'),
    ('garbage.jpg', b'this is not an image' * 10, 'cannot decode'),
])
def test_unreadable_files_raise_naming_the_file(tmp_path, name, content,
                                                reason):
    jpeg = _jpeg_bytes()
    png = cv2.imencode('.png', np.zeros((16, 16, 3), np.uint8))[1].tobytes()
    content = {
        'half-jpeg': jpeg[:len(jpeg) // 2],
        'jpeg-without-eoi': jpeg[:-2],
        'half-png': png[:len(png) // 2],
    }.get(content, content)
    path = tmp_path / name
    if content is not None:
        path.write_bytes(content)
    with pytest.raises(BrokenImageError, match=reason) as info:
        _load(path)
    assert str(path) in str(info.value)
    assert info.value.path == str(path)
    # ignore_empty drops the sample instead
    assert _load(path, ignore_empty=True) is None


def test_jpeg_with_trailing_bytes_after_eoi_loads(tmp_path):
    path = tmp_path / 'trailer.jpg'
    path.write_bytes(_jpeg_bytes() + b'camera trailer data')
    assert _load(path)['img'].shape == (32, 32, 3)


def test_bad_arguments_are_rejected():
    with pytest.raises(ValueError, match='color_type'):
        LoadImageFromFile(color_type='colour')
    with pytest.raises(ValueError, match='imdecode_backend'):
        LoadImageFromFile(imdecode_backend='pillow')
    with pytest.raises(KeyError, match='img_path'):
        LoadImageFromFile()(dict(img_id=3))


def test_load_annotations_makes_typed_arrays():
    results = dict(instances=[
        dict(bbox=[1, 2, 11, 22.5], bbox_label=2, ignore_flag=0),
        dict(bbox=[0, 0, 5, 5], bbox_label=0, ignore_flag=1),
    ])
    results = LoadAnnotations()(results)
    assert results['gt_bboxes'].dtype == np.float32
    np.testing.assert_array_equal(results['gt_bboxes'],
                                  [[1, 2, 11, 22.5], [0, 0, 5, 5]])
    assert results['gt_bboxes_labels'].dtype == np.int64
    np.testing.assert_array_equal(results['gt_bboxes_labels'], [2, 0])
    assert results['gt_ignore_flags'].dtype == bool
    np.testing.assert_array_equal(results['gt_ignore_flags'], [False, True])


def test_load_annotations_empty_and_options():
    results = LoadAnnotations()(dict(instances=[]))
    assert results['gt_bboxes'].shape == (0, 4)
    assert results['gt_bboxes_labels'].shape == (0, )
    assert results['gt_ignore_flags'].shape == (0, )
    results = LoadAnnotations(with_label=False)(
        dict(instances=[dict(bbox=[0, 0, 1, 1], bbox_label=1)]))
    assert 'gt_bboxes_labels' not in results
    assert results['gt_ignore_flags'].tolist() == [False]
    with pytest.raises(NotImplementedError, match='with_mask'):
        LoadAnnotations(with_mask=True)
    with pytest.raises(ValueError, match='box_type'):
        LoadAnnotations(box_type='rbox')
    assert LoadAnnotations(box_type='hbox').box_type == 'hbox'
