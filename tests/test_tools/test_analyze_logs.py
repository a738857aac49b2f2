"""tools/analysis_tools/analyze_logs.py on a log in mmengine's format."""
import json

import cv2
import numpy as np
import pytest
from toolbox_toys import run_tool

TOOL = run_tool('tools', 'analysis_tools', 'analyze_logs.py')
TIMES = {1: [5.0, 1.0, 2.0], 2: [4.0, 3.0, 5.0]}  # 3 iterations per epoch


def _write_log(path):
    """Training lines as LoggerHook writes them (``iter`` within the
    epoch, ``step`` global), a validation line after each epoch."""
    lines = []
    for epoch, times in TIMES.items():
        for i, t in enumerate(times, 1):
            step = (epoch - 1) * 3 + i
            lines.append(dict(lr=0.01, data_time=0.01, loss=2.0 / step,
                              loss_cls=1.0 / step, loss_bbox=1.0 / step,
                              time=t, epoch=epoch, iter=i, memory=100,
                              step=step))
        lines.append({'coco/bbox_mAP': 0.1 * epoch ** 2,
                      'coco/bbox_mAP_50': 0.5, 'data_time': 0.2,
                      'time': 9.0, 'step': epoch})
    path.write_text('\n'.join(json.dumps(line) for line in lines) + '\n')
    return str(path)


def test_plot_curve_series_and_png(tmp_path):
    log = _write_log(tmp_path / 'run.json')
    out = str(tmp_path / 'curve.png')
    series = TOOL['main'](['plot_curve', log, '--keys', 'loss_cls',
                           'bbox_mAP', '--out', out, '--figsize', '6', '4',
                           '--title', 'toy'])
    assert list(series) == ['run_loss_cls', 'run_bbox_mAP']
    xs, ys = series['run_loss_cls']
    assert xs == [1, 2, 3, 4, 5, 6]
    assert ys == pytest.approx([1 / s for s in xs])
    assert series['run_bbox_mAP'] == ([1, 2], [0.1, 0.4])
    assert cv2.imread(out).shape == (400, 600, 3)  # 6 x 4 inches at 100 dpi

    with pytest.raises(KeyError, match="no key 'loss_rpn'.*loss_cls"):
        TOOL['main'](['plot_curve', log, '--keys', 'loss_rpn', '--out', out])
    with pytest.raises(ValueError, match='--legend needs 2 names'):
        TOOL['main'](['plot_curve', log, '--keys', 'loss', 'time',
                      '--legend', 'a', '--out', out])


def test_cal_train_time(tmp_path, capsys):
    log = _write_log(tmp_path / 'run.json')
    result, = TOOL['main'](['cal_train_time', log])
    # The first iteration of each epoch is left out: (1, 2) and (3, 5);
    # validation lines (time 9.0) never count.
    assert result['epoch_mean'] == {1: 1.5, 2: 4.0}
    assert (result['slowest_epoch'], result['fastest_epoch']) == (2, 1)
    assert result['std_over_epochs'] == pytest.approx(1.25)
    assert result['mean_iter_time'] == pytest.approx(2.75)
    assert 'average iter time: 2.7500 s/iter' in capsys.readouterr().out
    result, = TOOL['main'](['cal_train_time', log, '--include-outliers'])
    assert result['mean_iter_time'] == pytest.approx(20 / 6)


def test_a_text_log_is_refused(tmp_path):
    log = tmp_path / 'run.log'
    log.write_text('2024/01/01 00:00:00 - mmengine - INFO - Epoch(train)\n')
    with pytest.raises(ValueError, match='line 1: not JSON'):
        TOOL['main'](['cal_train_time', str(log)])


def _write_epoch_log(path, epochs, val_every):
    """``epochs`` epochs of 2 iterations; a validation line every
    ``val_every`` epochs and after the last one (as mmengine validates)."""
    lines = []
    for epoch in range(1, epochs + 1):
        for i in (1, 2):
            lines.append(dict(loss=1.0, time=1.0, epoch=epoch, iter=i,
                              step=(epoch - 1) * 2 + i))
        if epoch % val_every == 0 or epoch == epochs:
            lines.append({'coco/bbox_mAP': epoch / 10, 'step': epoch})
    path.write_text('\n'.join(json.dumps(line) for line in lines) + '\n')
    return str(path)


def test_start_epoch_and_eval_interval(tmp_path):
    log = _write_log(tmp_path / 'run.json')
    out = str(tmp_path / 'curve.png')
    series = TOOL['main'](['plot_curve', log, '--keys', 'loss_cls',
                           'bbox_mAP', '--start-epoch', '2', '--out', out])
    # epoch 2 holds global steps 4..6 and the validation at epoch 2
    assert series['run_loss_cls'][0] == [4, 5, 6]
    assert series['run_bbox_mAP'] == ([2], [0.4])
    # validation every epoch, but --eval-interval 2 says every second one
    with pytest.raises(ValueError, match=r'bbox_mAP at epochs \[1, 2\], not '
                       'every 2 epoch'):
        TOOL['main'](['plot_curve', log, '--eval-interval', '2', '--out',
                      out])
    # validation at 2, 4, 5 (the last epoch) over 5 epochs: interval 2
    log5 = _write_epoch_log(tmp_path / 'five.json', 5, 2)
    series = TOOL['main'](['plot_curve', log5, '--eval-interval', '2',
                           '--start-epoch', '3', '--out', out])
    assert series['five_bbox_mAP'] == ([4, 5], [0.4, 0.5])
    with pytest.raises(ValueError, match='val_interval of the training'):
        TOOL['main'](['plot_curve', log5, '--eval-interval', '3', '--out',
                      out])
    # an iteration-based log has no epochs to start from
    iters = tmp_path / 'iters.json'
    iters.write_text(json.dumps(dict(loss=1.0, iter=1, step=1)) + '\n')
    with pytest.raises(ValueError, match='iteration-based'):
        TOOL['main'](['plot_curve', str(iters), '--keys', 'loss',
                      '--start-epoch', '2', '--out', out])


def _share_of_colour(png, bgr):
    img = cv2.imread(png)
    return (img == np.array(bgr, np.uint8)).all(-1).mean()


def test_style_and_backend(tmp_path):
    import matplotlib
    log = _write_log(tmp_path / 'run.json')
    dark, grid = str(tmp_path / 'dark.png'), str(tmp_path / 'grid.png')
    # mmdetection's default style is seaborn's 'dark': axes #EAEAF2
    TOOL['main'](['plot_curve', log, '--keys', 'loss', '--out', dark,
                  '--backend', 'Agg'])
    assert matplotlib.get_backend().lower() == 'agg'
    TOOL['main'](['plot_curve', log, '--keys', 'loss', '--out', grid,
                  '--style', 'whitegrid'])
    eaeaf2 = (0xF2, 0xEA, 0xEA)  # BGR
    assert _share_of_colour(dark, eaeaf2) > 0.4  # most of the axes area
    assert _share_of_colour(grid, eaeaf2) == 0
    # the style does not leak into later figures
    assert matplotlib.rcParams['axes.facecolor'] == 'white'
    TOOL['main'](['plot_curve', log, '--keys', 'loss', '--out', grid,
                  '--style', 'ggplot'])  # any matplotlib style
    with pytest.raises(ValueError, match="--style 'neon' is neither"):
        TOOL['main'](['plot_curve', log, '--out', grid, '--style', 'neon'])
    with pytest.raises(ValueError, match="--backend 'NoSuchBackend'"):
        TOOL['main'](['plot_curve', log, '--out', grid, '--backend',
                      'NoSuchBackend'])
