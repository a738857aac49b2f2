"""tools/test.py --fuse-conv-bn / --channels-last: the model is folded and
converted after the checkpoint loads, and the predictions stay the same."""
import pickle

import torch
import torch.nn as nn
from toolbox_toys import run_tool, tiny_setup  # noqa: F401

from detkit.models.layers import count_batchnorms

TEST = run_tool('tools', 'test.py')


def _run(setup, tmp_path, name, *flags):
    out = str(tmp_path / f'{name}.pkl')
    seen = {}

    class Spy(TEST['InferenceSpeedupHook']):

        def before_test(self, runner):
            super().before_test(runner)
            seen['norms'] = count_batchnorms(runner.model)
            seen['cl'] = all(
                m.weight.is_contiguous(memory_format=torch.channels_last)
                for m in runner.model.modules() if isinstance(m, nn.Conv2d))

    # main() looks the hook class up in the tool's own globals.
    tool_globals = TEST['main'].__globals__
    original = tool_globals['InferenceSpeedupHook']
    tool_globals['InferenceSpeedupHook'] = Spy
    try:
        metrics = TEST['main']([
            setup['cfg_file'], setup['ckpt'], '--work-dir',
            str(tmp_path / name), '--out', out, *flags
        ])
    finally:
        tool_globals['InferenceSpeedupHook'] = original
    with open(out, 'rb') as f:
        return metrics, pickle.load(f), seen


def test_fused_channels_last_test_run_matches_plain(tiny_setup,  # noqa: F811
                                                    tmp_path):
    metrics, preds, seen = _run(tiny_setup, tmp_path, 'plain')
    assert seen == {}  # no flag: no hook
    fused_metrics, fused_preds, seen = _run(
        tiny_setup, tmp_path, 'fused', '--fuse-conv-bn', '--channels-last')
    assert seen == dict(norms=0, cl=True)
    assert fused_metrics == metrics
    assert len(fused_preds) == len(preds) == 3
    for a, b in zip(fused_preds, preds):
        a, b = a['pred_instances'], b['pred_instances']
        assert torch.equal(a['labels'], b['labels'])
        torch.testing.assert_close(a['scores'], b['scores'], rtol=1e-4,
                                   atol=1e-6)
        torch.testing.assert_close(a['bboxes'], b['bboxes'], rtol=1e-4,
                                   atol=1e-3)
