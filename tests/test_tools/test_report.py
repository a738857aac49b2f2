"""tools/analysis_tools/report.py, tools/test.py --report and
tools/train.py --report: the page's numbers on a hand-made test set, worked
out by hand, equal to what the other tools print; the page is one
self-contained file."""
import json
import os.path as osp
import re
import sys

import pytest
from report_page import (metric_values, parse_page, table_values,
                         write_hand_made)
from toolbox_toys import run_tool, tiny_setup  # noqa: F401

REPORT = run_tool('tools', 'analysis_tools', 'report.py')
CONFUSION = run_tool('tools', 'analysis_tools', 'confusion_matrix.py')
ANALYZE = run_tool('tools', 'analysis_tools', 'analyze_results.py')
TEST = run_tool('tools', 'test.py')
TRAIN = run_tool('tools', 'train.py')

SECTIONS = ['glance', 'metrics', 'classes', 'pr', 'confusion', 'errors',
            'scores', 'gallery', 'training']


def _self_contained(page, num_images):
    # Only data: URIs and in-page anchors; no script loaded from a file.
    assert page['links'], 'the page should embed pictures'
    for tag, url in page['links']:
        assert url.startswith(('data:', '#')), (tag, url[:80])
    assert all('src' not in s for s in page['scripts'])
    images = [u for t, u in page['links'] if t == 'img']
    assert len(images) == num_images
    assert all(u.startswith('data:image/jpeg;base64,') for u in images)
    assert page['sections'] == SECTIONS


def test_report_by_hand(tmp_path):
    """Two classes, A and B, three images (report_page.GTS / PREDS):

    image 1: A1 [0,0,10,10], A2 [20,0,30,10], B1 [40,0,50,10], A3
      [60,0,70,10]; class-A detections by score: 0.9 on A1 (IoU 1), 0.8 on
      A2 shifted by 2 px (IoU 80/120 = 0.667), 0.7 exactly on B1, 0.6 on
      background, 0.5 loosely on A3 ([60,0,70,30], IoU 100/300 = 0.333);
      class B: 0.9 exactly on B1;
    image 2: B2 [10,10,30,30], found exactly at 0.95;
    image 3: A4 [5,5,25,25], nothing detected.
    """
    cfg_file, pkl = write_hand_made(tmp_path)
    out = str(tmp_path / 'report.html')
    assert REPORT['main']([cfg_file, pkl, '--out', out, '--topk', '2',
                           '--checkpoint', 'hand.pth']) == out
    text = open(out, encoding='utf-8').read()
    page = parse_page(text)
    # --topk 2: the two worst and the two best images.
    _self_contained(page, num_images=4)

    # COCO AP (101 recall thresholds): class A, 4 objects. IoU <= 0.65:
    # the 0.9 and 0.8 boxes are true, the rest false: precision 1 up to
    # recall 2/4 -> 51/101 of the thresholds. IoU >= 0.7: only the 0.9
    # box: precision 1 up to recall 1/4 -> 26/101. Over the 10 IoU
    # thresholds (4 at or below 0.65): AP_A = (4*51 + 6*26) / 1010.
    # Class B: both objects found exactly first -> AP 1.
    ap_a = (4 * 51 + 6 * 26) / 1010
    metrics = metric_values(page)
    assert metrics['mAP_m'] is None and metrics['mAP_l'] is None  # COCO -1
    assert metrics['mAP'] == pytest.approx((ap_a + 1) / 2)
    assert metrics['mAP_50'] == pytest.approx((51 / 101 + 1) / 2)
    assert metrics['mAP_75'] == pytest.approx((26 / 101 + 1) / 2)
    assert metrics['mAP_s'] == pytest.approx((ap_a + 1) / 2)  # all small
    classes = table_values(page['tables']['class-table'])
    # class, GT boxes, detections, AP, AP50, AP75, recall@0.5, F1 thr, F1
    # F1 for A: after 0.9: 2*1/(4+1) = 0.4; after 0.8: 2*2/(4+2) = 0.667,
    # then lower (4/7, 4/8, 4/9). For B: after 0.95: 2/3, after 0.9: 1.
    assert classes['A'] == pytest.approx(
        [4, 5, ap_a, 51 / 101, 26 / 101, 0.5, 0.8, 2 / 3])
    assert classes['B'] == pytest.approx([2, 2, 1, 1, 1, 1, 0.9, 1])

    # Confusion matrix at score 0.3, IoU 0.5 (rows ground truth A, B,
    # background; columns prediction). Image 1: the 0.9 and 0.8 A boxes
    # on A1, A2 -> [A, A] = 2; the 0.7 A box on B1 -> [B, A]; the 0.6 and
    # 0.5 A boxes overlap nothing at IoU 0.5 -> [bg, A] = 2; the B box on
    # B1 -> [B, B]; A3 never found -> [A, bg]. Image 2: [B, B]. Image 3:
    # A4 missed -> [A, bg]. Total [A, bg] = 2, [B, B] = 2.
    cells = [[int(c['data-count']) for c in row if 'data-count' in c]
             for row in page['tables']['confusion'][1:]]
    expected = [[2, 0, 2], [1, 2, 0], [2, 0, 0]]
    assert cells == expected
    assert CONFUSION['main']([cfg_file, pkl, str(tmp_path / 'cm')
                              ]).tolist() == expected

    # Per-image AP (VOC area AP, mean over the image's classes and IoU
    # 0.5:0.95). Image 1, class A (3 objects here): IoU <= 0.65: TP, TP,
    # FP, FP, FP -> recall 2/3 at precision 1 -> AP 2/3; IoU >= 0.7: only
    # the first -> 1/3. Class B: 1. Image AP = (4 * (2/3 + 1)/2 +
    # 6 * (1/3 + 1)/2) / 10 = 11/15. Image 2: 1. Image 3: 0.
    figures = [(f['data-kind'], f['data-image'], float(f['data-ap']))
               for f in page['figures']]
    assert figures == [('worst', 'img3.png', 0.0),
                       ('worst', 'img1.png', pytest.approx(11 / 15)),
                       ('best', 'img2.png', 1.0),
                       ('best', 'img1.png', pytest.approx(11 / 15))]
    ranked = ANALYZE['main']([cfg_file, pkl, str(tmp_path / 'an'),
                              '--topk', '2'])
    assert [(osp.basename(p), ap) for p, ap in ranked['bad']] == [
        (name, ap) for kind, name, ap in figures if kind == 'worst']

    # Error breakdown (class A, see tests/test_evaluation/test_analysis.py
    # for the curves): AP at IoU 0.1 = 66/101, with the box on B1 ignored
    # 69.75/101, without background false positives 76/101.
    errors = table_values(page['tables']['error-table'])
    # columns: AP75, AP50, localisation, confusion, background, missed
    assert errors['A'] == pytest.approx(
        [26 / 101, 51 / 101, 15 / 101, 3.75 / 101, 6.25 / 101, 25 / 101])
    assert errors['B'] == pytest.approx([1, 1, 0, 0, 0, 0], abs=1e-12)
    assert errors['all classes'][1] == pytest.approx(metrics['mAP_50'])

    assert 'hand.pth' in text and 'CocoDataset' in text
    assert re.search(r'images:</b> 3<', text)
    assert 'ground-truth boxes:</b> 6<' in text
    assert 'predicted boxes:</b> 7<' in text
    # No training log was given: the section says how to add one.
    assert any('--scalars' in n for n in page['notes'])


def test_report_with_voc_metric(tmp_path):
    cfg_file, pkl = write_hand_made(tmp_path, evaluator='voc')
    out = str(tmp_path / 'voc.html')
    REPORT['main']([cfg_file, pkl, '--out', out, '--topk', '1'])
    page = parse_page(open(out, encoding='utf-8').read())
    _self_contained(page, num_images=2)
    # VOC 11-point AP at IoU 0.5, boxes with +1 widths (VOC convention):
    # class A (4 objects): TP (IoU 1), TP (the shifted box: 9*11 / (121 +
    # 121 - 99) = 0.69), FP, FP, FP (the loose box: 121 / 341 = 0.35) ->
    # recall 0.5 at precision 1: 6 of the 11 points (0, 0.1, ..., 0.5) ->
    # 6/11. Class B: 1. mAP = (6/11 + 1) / 2.
    metrics = metric_values(page)
    assert metrics['pascal_voc/mAP'] == pytest.approx((6 / 11 + 1) / 2)
    classes = table_values(page['tables']['class-table'])
    assert classes['A'][:3] == pytest.approx([4, 5, 6 / 11])
    # The sections that need COCO's arrays say so in one line.
    notes = ' '.join(page['notes'])
    assert 'error breakdown needs the COCO evaluation arrays' in notes
    assert 'Score analysis needs' in notes
    assert 'IoU 0.75 are not available' in notes
    # The confusion matrix and the ranking do not depend on the evaluator.
    cells = [[int(c['data-count']) for c in row if 'data-count' in c]
             for row in page['tables']['confusion'][1:]]
    assert cells == [[2, 0, 2], [1, 2, 0], [2, 0, 0]]


def test_report_tool_errors(tmp_path):
    cfg_file, pkl = write_hand_made(tmp_path)
    with pytest.raises(SystemExit, match='end with .html'):
        REPORT['main']([cfg_file, pkl, '--out', str(tmp_path / 'r.pdf')])
    with pytest.raises(SystemExit, match='--topk must be >= 1'):
        REPORT['main']([cfg_file, pkl, '--out', str(tmp_path / 'r.html'),
                        '--topk', '0'])
    with pytest.raises(FileNotFoundError, match='tools/test.py'):
        REPORT['main']([cfg_file, str(tmp_path / 'none.pkl'), '--out',
                        str(tmp_path / 'r.html')])


def test_test_tool_report_shows_printed_metrics(tiny_setup,  # noqa: F811
                                                tmp_path):
    out = tmp_path / 'test_report.html'
    metrics = TEST['main']([
        tiny_setup['cfg_file'], tiny_setup['ckpt'], '--work-dir',
        str(tmp_path / 'work'), '--report', str(out)
    ])
    page = parse_page(out.read_text(encoding='utf-8'))
    shown = metric_values(page)
    # test.py rounds to 3 places; the page keeps COCOeval's values (and
    # shows a dash for its -1).
    for key, value in metrics.items():
        value_shown = shown[key.split('bbox_')[-1]]
        assert (-1 if value_shown is None else round(value_shown, 3)) == value
    with open(osp.join(tiny_setup['data_root'], 'annotations',
                       'val.json')) as f:
        num_val = len(json.load(f)['images'])
    _self_contained(page, num_images=2 * min(12, num_val))
    assert tiny_setup['ckpt'] in out.read_text(encoding='utf-8')
    with pytest.raises(SystemExit):  # argparse: --report must be .html
        TEST['main']([tiny_setup['cfg_file'], tiny_setup['ckpt'],
                      '--report', str(tmp_path / 'r.txt')])


def test_train_tool_report_has_the_curves(tiny_setup, tmp_path):  # noqa: F811
    out = tmp_path / 'train_report.html'
    TRAIN['main']([
        tiny_setup['cfg_file'], '--work-dir', str(tmp_path / 'work'),
        '--report', str(out), '--cfg-options',
        # its own visualizer, so that the run logs to its own folder
        'visualizer.name=train_report_test',
        # the tiny checkpoint predicts boxes (a fresh model may not)
        f'load_from={tiny_setup["ckpt"]}'
    ])
    text = out.read_text(encoding='utf-8')
    page = parse_page(text)
    assert page['sections'] == SECTIONS
    assert 'Training losses' in text and 'Validation AP' in text
    assert 'trained in this run' in text
    # every logged loss has a curve
    for key in ('loss', 'loss_cls', 'loss_bbox'):
        assert f'>{key}</text>' in text


def test_show_without_a_display_says_so_and_goes_on(tmp_path, monkeypatch,
                                                    capsys):
    # --show of confusion_matrix.py and analyze_results.py on a machine
    # without a display: one line saying so, and the files are written.
    monkeypatch.delenv('DISPLAY', raising=False)
    monkeypatch.delenv('WAYLAND_DISPLAY', raising=False)
    monkeypatch.setattr(sys, 'platform', 'linux')
    cfg_file, pkl = write_hand_made(tmp_path)
    matrix = CONFUSION['main']([cfg_file, pkl, str(tmp_path / 'cm'),
                                '--show'])
    assert matrix.tolist() == [[2, 0, 2], [1, 2, 0], [2, 0, 0]]
    assert (tmp_path / 'cm' / 'confusion_matrix.png').is_file()
    ANALYZE['main']([cfg_file, pkl, str(tmp_path / 'an'), '--topk', '1',
                     '--show'])
    assert sorted(p.name for p in (tmp_path / 'an').iterdir()) == ['bad',
                                                                  'good']
    out = capsys.readouterr().out
    assert out.count('--show: no display on this machine') == 2


def test_report_with_the_faster_coco_eval_backend(tmp_path):
    # The error breakdown re-runs the evaluator's own COCOeval class: with
    # faster-coco-eval the same hand-worked numbers; its per-image matches
    # stay in C++, so the score section says what it needs.
    import mmengine
    cfg_file, pkl = write_hand_made(tmp_path)
    cfg = mmengine.Config.fromfile(cfg_file)
    cfg.test_evaluator.backend = 'faster-coco-eval'
    cfg.dump(cfg_file)
    out = str(tmp_path / 'fast.html')
    REPORT['main']([cfg_file, pkl, '--out', out, '--topk', '1'])
    page = parse_page(open(out, encoding='utf-8').read())
    errors = table_values(page['tables']['error-table'])
    assert errors['A'] == pytest.approx(
        [26 / 101, 51 / 101, 15 / 101, 3.75 / 101, 6.25 / 101, 25 / 101])
    classes = table_values(page['tables']['class-table'])
    assert classes['A'][2] == pytest.approx((4 * 51 + 6 * 26) / 1010)
    assert classes['A'][6] is None  # no F1 threshold without the matches
    assert any('backend="pycocotools"' in n for n in page['notes'])
