"""TensorBoard as a visualization backend chosen in the config:
vis_backends=[dict(type='TensorboardVisBackend')] (mmengine's)."""
import os
import os.path as osp

import pytest
from toolbox_toys import run_tool, tiny_setup, write_cfg  # noqa: F401

pytest.importorskip(
    'tensorboard', reason='tensorboard is optional (requirements/optional'
    '.txt); pip install tensorboard to log to TensorBoard')


def test_test_tool_draws_into_tensorboard(tiny_setup, tmp_path):  # noqa
    from tensorboard.backend.event_processing.event_accumulator import \
        EventAccumulator
    cfg = dict(tiny_setup['cfg'])
    backends = [dict(type='LocalVisBackend'),
                dict(type='TensorboardVisBackend')]
    cfg['vis_backends'] = backends
    # A fresh name: mmengine hands out an existing visualizer of the same
    # name (made by another runner in this process) instead of a new one.
    cfg['visualizer'] = dict(type='DetLocalVisualizer',
                             vis_backends=backends, name='tensorboard_test')
    cfg['default_hooks'] = dict(
        cfg['default_hooks'],
        visualization=dict(type='DetVisualizationHook', draw=True))
    cfg_file = write_cfg(cfg, tmp_path / 'tensorboard_cfg.py')
    work_dir = str(tmp_path / 'work')
    run_tool('tools', 'test.py')['main']([
        cfg_file, tiny_setup['ckpt'], '--work-dir', work_dir,
        '--cfg-options', 'experiment_name=tensorboard_test'
    ])
    event_dirs = {root for root, _, files in os.walk(work_dir)
                  for name in files if name.startswith('events.out.tfevents')}
    assert len(event_dirs) == 1
    events = EventAccumulator(event_dirs.pop(), size_guidance={'images': 0})
    events.Reload()
    tags = sorted(events.Tags()['images'])
    assert tags == ['val_000000.png', 'val_000001.png', 'val_000002.png']
    for tag in tags:
        image, = events.Images(tag)
        # ground truth | prediction, side by side, of a 64 x 64 image
        assert (image.width, image.height) == (128, 64)
    # LocalVisBackend beside it keeps PNG copies.
    local = [name for root, _, files in os.walk(work_dir) for name in files
             if osp.basename(root) == 'vis_image']
    assert len(local) == 3
