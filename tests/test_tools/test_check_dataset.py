"""tools/misc/check_dataset.py on a hand-made broken COCO dataset (every
kind of problem once or twice), its --fix, and the folder checks of
DetInferencer.check_inputs / image_demo.py --check / images2coco.py
--check. Commands run in subprocesses with a timeout: a FIFO among the
images must be refused, never waited on."""
import json
import os
import os.path as osp
import subprocess
import sys

import cv2
import numpy as np
import pytest

from detkit.apis import DetInferencer

REPO_ROOT = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
W, H = 48, 40  # above the 32 px a folder check notes


def _png(folder, name, width=W, height=H):
    cv2.imwrite(str(folder / name), np.full((height, width, 3), 128,
                                            np.uint8))


def _ann(i, img_id, cat, bbox, iscrowd=0):
    return dict(id=i, image_id=img_id, category_id=cat, bbox=bbox,
                area=bbox[2] * bbox[3], iscrowd=iscrowd)


@pytest.fixture
def broken(tmp_path):
    """A dataset with the problems users meet, each in a known image or
    annotation; returns the config path."""
    img = tmp_path / 'images'
    img.mkdir()
    for name in ('good.png', 'crowd.png', 'bare.png', 'nosize.png',
                 'swapped.png', 'resized.png', 'strid.png', 'dupid.png'):
        _png(img, name)
    (img / 'empty.png').write_bytes(b'')
    _, jpeg = cv2.imencode('.jpg', np.zeros((H, W, 3), np.uint8))
    (img / 'cut.jpg').write_bytes(jpeg.tobytes()[:len(jpeg) // 2])
    os.mkfifo(img / 'fifo.png')
    size = dict(width=W, height=H)
    images = [
        dict(id=1, file_name='good.png', **size),
        dict(id=2, file_name='crowd.png', **size),
        dict(id=3, file_name='bare.png', **size),
        dict(id=4, file_name='nosize.png'),
        dict(id=5, file_name='swapped.png', width=H, height=W),
        dict(id=6, file_name='resized.png', width=2 * W, height=2 * H),
        dict(id=7, file_name='empty.png', **size),
        dict(id=8, file_name='cut.jpg', **size),
        dict(id=9, file_name='fifo.png', **size),
        dict(id=10, file_name='missing.png', **size),
        dict(id=1, file_name='dupid.png', **size),
        dict(id='x7', file_name='strid.png', **size),
    ]
    annotations = [
        _ann(1, 1, 1, [2, 2, 10, 10]),
        _ann(2, 1, 2, [40, 10, 20, 10]),  # x2 = 60 > 48: partly outside
        _ann(3, 1, 1, [1, 1, 0.5, 5]),  # degenerate
        _ann(4, 1, 1, [50, 45, 5, 5]),  # entirely outside
        _ann(5, 1, 9, [2, 2, 5, 5]),  # category 9 is not defined
        _ann(6, 1, 3, [2, 2, 5, 5]),  # 'bird': defined, not in classes
        _ann(7, 99, 1, [2, 2, 5, 5]),  # no such image
        _ann(8, 2, 1, [2, 2, 8, 8], iscrowd=1),
        _ann(8, 4, 2, [2, 2, 8, 8]),  # id 8 again
    ] + [_ann(i + 4, i, 1, [2, 2, 8, 8]) for i in range(5, 11)] + [
        dict(id=15, image_id=1, category_id=1, bbox=[1, 2, 3]),
        _ann(16, 'x7', 2, [2, 2, 8, 8]),
    ]
    categories = [dict(id=1, name='cat'), dict(id=2, name='dog'),
                  dict(id=3, name='bird')]
    (tmp_path / 'ann.json').write_text(json.dumps(dict(
        images=images, annotations=annotations, categories=categories)))
    cfg = tmp_path / 'cfg.py'
    cfg.write_text(
        f"dataset = dict(type='CocoDataset', data_root={str(tmp_path)!r}, "
        "ann_file='ann.json', data_prefix=dict(img='images/'), "
        "metainfo=dict(classes=('cat', 'dog')), pipeline=["
        "dict(type='LoadImageFromFile'), dict(type='LoadAnnotations')])\n"
        'train_dataloader = dict(dataset=dict(dataset, filter_cfg=dict('
        'filter_empty_gt=True, min_size=0)))\n'
        'val_dataloader = dict(dataset=dict(dataset, test_mode=True))\n')
    return tmp_path


def _run(*args, tool='tools/misc/check_dataset.py'):
    env = dict(os.environ, PYTHONPATH=REPO_ROOT, OMP_NUM_THREADS='1')
    return subprocess.run([sys.executable, tool, *map(str, args)],
                          cwd=REPO_ROOT, env=env, capture_output=True,
                          text=True, timeout=120)


def _section(report, title):
    """The indented lines of one section of the report."""
    lines = report.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith(title))
    end = next((i for i in range(start + 1, len(lines))
                if not lines[i].startswith(' ')), len(lines))
    return lines[start + 1:end]


def test_every_problem_is_reported_with_counts_and_examples(broken):
    result = _run(broken / 'cfg.py', '--max-examples', '4')
    assert result.returncode == 1, result.stderr
    out = result.stdout
    root, ann = broken, broken / 'ann.json'
    errors = _section(out, 'ERRORS')
    assert [line for line in errors if not line.startswith('      ')] == [
        '  1 image ids listed twice [duplicate_image_id]',
        '  1 images without a positive width/height [image_size]',
        '  1 annotation ids listed twice [duplicate_ann_id]',
        '  1 annotations whose bbox is not 4 numbers [bad_bbox]',
        '  4 image files that cannot be read [broken_image]',
        '  1 images whose size differs from the annotation [size_mismatch]',
        '  1 images whose width and height are swapped against the '
        'annotation (EXIF rotation) [exif_swapped]',
    ]
    images = root / 'images'
    for line in [
            f'{ann}: image id=1 appears twice in "images"; image ids must be '
            'unique',
            f'{ann}: image id=4 (nosize.png) has width=None; each image needs'
            ' positive "width" and "height" in pixels',
            f'{ann}: annotation id=8 appears twice; annotation ids must be '
            'unique',
            f'{ann}: annotation id=15 (image id=1) has bbox=[1, 2, 3]; '
            'expected four finite numbers [x, y, w, h]',
            f'{images}/empty.png: the file is empty (0 bytes)',
            f'{images}/cut.jpg: the JPEG data ends before its end-of-image '
            'marker (truncated file)',
            f'{images}/fifo.png: not a regular file but a FIFO (named pipe);'
            ' replace it with the image file',
            f'{images}/missing.png: the file does not exist',
            f'{images}/resized.png decodes to width x height = 48 x 40, but '
            'its annotation says 96 x 80',
            f'{images}/swapped.png decodes to width x height = 48 x 40, but '
            'its annotation says 40 x 48, so its boxes do not fit the image. '
            'Width and height are swapped']:
        assert any(e.startswith('      ' + line) for e in errors), line
    assert _section(out, 'SKIPPED') == [
        '  1 annotations whose image_id is not in "images" [orphan]',
        '      annotation id=7 of image id=99: bbox=[2, 2, 5, 5], '
        'category_id=1',
        '  1 degenerate boxes (w < 1 or h < 1) [small]',
        '      annotation id=3 of image id=1: bbox=[1, 1, 0.5, 5], '
        'category_id=1',
        '  1 boxes entirely outside their image [outside]',
        '      annotation id=4 of image id=1: bbox=[50, 45, 5, 5], '
        'category_id=1',
        '  1 annotations of a category id the file does not define '
        '[unknown_category]',
        '      annotation id=5 of image id=1: bbox=[2, 2, 5, 5], '
        'category_id=9',
        '  1 annotations of a category not in the classes [category]',
        '      annotation id=6 of image id=1: bbox=[2, 2, 5, 5], '
        'category_id=3',
    ]
    assert _section(out, 'NOTES') == [
        '  1 image ids that are not integers (training takes them; COCO '
        'evaluation of this file would refuse them) '
        '[image_id_not_int_train]',
        "      img_id='x7', file_name='strid.png'",
        '  1 boxes partly outside their image (kept, clipped by Resize) '
        '[partial]',
        '      annotation id=2 of image id=1: bbox=[40, 10, 20, 10], '
        'category_id=2',
        '  1 crowd boxes (kept as ignored) [crowd]',
        '      annotation id=8 of image id=2: bbox=[2, 2, 8, 8], '
        'category_id=1',
        '  1 images whose only boxes are crowd/ignored [crowd_only]',
        f'      image id=2: {images}/crowd.png',
        '  1 images without any box [empty_image]',
        f'      image id=3: {images}/bare.png',
    ]
    # Boxes that are not ignored, per class: cat = annotation 1 and the
    # six of images 5..10; dog = annotations 2 and 16.
    assert _section(out, 'class balance') == [
        '  cat        7       7', '  dog        2       2']
    assert out.splitlines()[-1] == '10 errors'


def test_validation_split_refuses_string_ids(broken):
    result = _run(broken / 'cfg.py', '--split', 'val')
    assert result.returncode == 1
    assert ('  1 image ids that are not integers (COCO evaluation refuses '
            'them) [image_id_not_int]') in result.stdout.splitlines()
    # Test datasets are not filtered: no filter_cfg in the header.
    assert 'test_mode=True, filter_cfg=None' in result.stdout


def test_fix_writes_a_copy_that_checks_clean(broken):
    fixed = broken / 'fixed.json'
    result = _run(broken / 'cfg.py', '--fix', fixed)
    assert result.returncode == 1  # the report is still that of the input
    summary = result.stdout.splitlines()[-4:]
    assert summary == [
        f'--fix: wrote {fixed} (5 images, 6 annotations)',
        '  removed 7 images: 1 duplicate_image_id, 4 broken_image, '
        '1 size_mismatch, 1 exif_swapped',
        '  removed 11 annotations: 1 small, 1 outside, 1 unknown_category, '
        '1 orphan, 6 of removed images, 1 bad_bbox',
        '  corrected: 1 image sizes read from their files, 1 image ids '
        'renumbered to integers, 1 annotation ids renumbered, 1 boxes '
        'clipped to their image',
    ]
    coco = json.loads(fixed.read_text())
    assert [(i['id'], i['file_name'], i['width'], i['height'])
            for i in coco['images']] == [
                (1, 'good.png', W, H), (2, 'crowd.png', W, H),
                (3, 'bare.png', W, H), (4, 'nosize.png', W, H),
                (5, 'strid.png', W, H)]  # the next free integer
    assert [(a['id'], a['image_id'], a['bbox'])
            for a in coco['annotations']] == [
                (1, 1, [2, 2, 10, 10]), (2, 1, [40, 10, 8, 10]),
                (6, 1, [2, 2, 5, 5]), (8, 2, [2, 2, 8, 8]),
                (17, 4, [2, 2, 8, 8]), (16, 5, [2, 2, 8, 8])]
    again = _run(broken / 'cfg.py', '--cfg-options',
                 f'train_dataloader.dataset.ann_file={fixed}')
    assert again.returncode == 0, again.stdout
    assert 'ERRORS' not in again.stdout
    assert again.stdout.splitlines()[-1] == 'no errors'
    # And the validation split of the fixed file loads in test mode.
    val = _run(broken / 'cfg.py', '--split', 'val', '--cfg-options',
               f'val_dataloader.dataset.ann_file={fixed}')
    assert val.returncode == 0, val.stdout


def test_a_config_without_the_split_or_with_a_typo(broken):
    result = _run(broken / 'cfg.py', '--split', 'test')
    assert result.returncode == 1
    assert result.stderr.strip() == (
        f"check_dataset: {broken / 'cfg.py'} has no test_dataloader.dataset")
    result = _run(broken / 'cfg.py', '--cfg-options', 'trian_dataloader.x=1')
    assert result.returncode == 1
    assert ("--cfg-options trian_dataloader.x=1: "
            f"{broken / 'cfg.py'} has no top-level key 'trian_dataloader'"
            in result.stderr)


def test_folder_checks_before_inference(broken):
    images = broken / 'images'
    _png(images, 'tiny.png', 20, 12)
    _png(images, 'strip.png', 400, 30)
    cv2.imwrite(str(images / 'gray.png'), np.full((40, 40), 7, np.uint8))
    # First through the command-line tools (subprocesses with a timeout),
    # exit 1 since some images cannot be read.
    demo = _run(images, 'unused_config.py', '--check',
                tool='demo/image_demo.py')
    assert demo.returncode == 1, demo.stderr
    assert demo.stdout.splitlines()[0] == (
        'checked 14 images: 3 unreadable, 3 with notes')
    assert f'  {images}/fifo.png: not a regular file but a FIFO (named ' \
        'pipe); replace it with the image file' in demo.stdout.splitlines()
    classes = broken / 'classes.txt'
    classes.write_text('cat\ndog\n')
    conv = _run(images, classes, broken / 'out.json', '--check',
                tool='tools/dataset_converters/images2coco.py')
    assert conv.returncode == 1
    assert conv.stdout == demo.stdout  # one report, one code path
    assert not (broken / 'out.json').exists()
    # Without --check, the conversion lists every unreadable file at once.
    conv = _run(images, classes, broken / 'out.json',
                tool='tools/dataset_converters/images2coco.py')
    assert conv.returncode == 1 and not (broken / 'out.json').exists()
    assert (f'OSError: 3 images under {images} cannot be read; remove or '
            'replace them (--check lists odd images too):') in conv.stderr
    assert f'  {images}/fifo.png: not a regular file but a FIFO (named ' \
        'pipe); replace it with the image file' in conv.stderr.splitlines()

    # The library call behind them (the folder as collect_inputs lists
    # it: missing.png is only in the json).
    report = DetInferencer.check_inputs(str(images))
    assert report.num_images == 14
    assert sorted((p.name, p.problem) for p in report.errors) == [
        ('cut.jpg', 'the JPEG data ends before its end-of-image marker '
         '(truncated file)'),
        ('empty.png', 'the file is empty (0 bytes)'),
        ('fifo.png', 'not a regular file but a FIFO (named pipe); replace '
         'it with the image file')]
    assert {p.name: p.problem for p in report.notes} == {
        'tiny.png': '20 x 12: a side below 32 px (training with filter_cfg '
        'min_size=32 drops it; small objects may vanish)',
        'strip.png': '400 x 30: aspect ratio above 10 (resizing to the model'
        ' scale squeezes one side)',
        'gray.png': 'grayscale: loaded as 3 equal channels'}
