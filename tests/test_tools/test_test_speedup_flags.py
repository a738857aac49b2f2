"""tools/test.py memory format and --fuse-conv-bn: channels-last by
default, NCHW with --no-channels-last (or the config's
``channels_last=False``), BatchNorm folded after the checkpoint loads with
--fuse-conv-bn; the predictions stay the same up to float rounding."""
import pickle

import torch
import torch.nn as nn
from mmengine.hooks import Hook
from toolbox_toys import run_tool, tiny_setup  # noqa: F401

from detkit.models.layers import count_batchnorms
from detkit.registry import HOOKS

TEST = run_tool('tools', 'test.py')
SEEN = {}


@HOOKS.register_module(force=True)
class _LayoutSpyHook(Hook):
    """Records, as testing starts (after every other before_test hook),
    the model's norm count and conv weight layouts."""

    priority = 'VERY_LOW'

    def before_test(self, runner):
        convs = [m for m in runner.model.modules()
                 if isinstance(m, nn.Conv2d)]
        SEEN.update(
            norms=count_batchnorms(runner.model),
            cl=all(m.weight.is_contiguous(memory_format=torch.channels_last)
                   for m in convs),
            nchw=all(m.weight.is_contiguous() for m in convs))


def _run(setup, tmp_path, name, *flags):
    out = str(tmp_path / f'{name}.pkl')
    cfg_file = tmp_path / 'spied.py'
    with open(setup['cfg_file']) as f:
        cfg_file.write_text(
            f.read() + "\ncustom_hooks = [dict(type='_LayoutSpyHook')]\n")
    SEEN.clear()
    metrics = TEST['main']([
        str(cfg_file), setup['ckpt'], '--work-dir', str(tmp_path / name),
        '--out', out, *flags
    ])
    with open(out, 'rb') as f:
        return metrics, pickle.load(f), dict(SEEN)


def _assert_close(preds, expected, exact=False):
    assert len(preds) == len(expected) == 3
    for a, b in zip(preds, expected):
        a, b = a['pred_instances'], b['pred_instances']
        assert torch.equal(a['labels'], b['labels'])
        if exact:
            assert torch.equal(a['scores'], b['scores'])
            assert torch.equal(a['bboxes'], b['bboxes'])
        torch.testing.assert_close(a['scores'], b['scores'], rtol=1e-4,
                                   atol=1e-6)
        torch.testing.assert_close(a['bboxes'], b['bboxes'], rtol=1e-4,
                                   atol=1e-3)


def test_memory_format_and_fusion_keep_the_predictions(
        tiny_setup, tmp_path):  # noqa: F811
    metrics, preds, seen = _run(tiny_setup, tmp_path, 'nchw',
                                '--no-channels-last')
    assert seen['nchw'] and not seen['cl'] and seen['norms'] > 0
    default_metrics, default_preds, seen = _run(tiny_setup, tmp_path,
                                                'default')
    assert seen['cl'] and seen['norms'] > 0
    assert default_metrics == metrics
    _assert_close(default_preds, preds)
    fused_metrics, fused_preds, seen = _run(tiny_setup, tmp_path, 'fused',
                                            '--fuse-conv-bn')
    assert seen['cl'] and seen['norms'] == 0
    assert fused_metrics == metrics
    _assert_close(fused_preds, preds)
    # The config key gives the NCHW run too, bit for bit.
    _, key_preds, seen = _run(tiny_setup, tmp_path, 'key', '--cfg-options',
                              'channels_last=False')
    assert seen['nchw'] and not seen['cl']
    _assert_close(key_preds, preds, exact=True)
