"""tools/analysis_tools/benchmark.py: what it times and how it reports."""
import json
import statistics

import pytest
from toolbox_toys import run_tool, tiny_setup  # noqa: F401

TOOL = run_tool('tools', 'analysis_tools', 'benchmark.py')


def test_time_iterations_skips_warmup_and_stops_at_the_end():
    seen = []
    times = TOOL['time_iterations'](seen.append, range(5), max_iter=4,
                                    num_warmup=1)
    assert seen == [0, 1, 2, 3] and len(times) == 3
    times = TOOL['time_iterations'](seen.append, range(2), max_iter=10,
                                    num_warmup=1)
    assert len(times) == 1  # two items, the first is warm-up
    summary = TOOL['summarize']([0.5, 0.1, 0.2], batch_size=2)
    assert summary['median_time'] == 0.2
    assert summary['images_per_second'] == pytest.approx(10.0)
    assert summary['images_per_second_mean'] == pytest.approx(2 / (0.8 / 3))
    with pytest.raises(RuntimeError, match='no timed iteration'):
        TOOL['summarize']([], 1)


@pytest.mark.parametrize('task,batch,timed', [('inference', 1, 2),
                                              ('dataloader', 2, 1),
                                              ('dataset', 1, 2)])
def test_each_task_on_the_tiny_config(tiny_setup, tmp_path,  # noqa: F811
                                      task, batch, timed):
    out = tmp_path / f'{task}.json'
    # 3 test images; the test loader holds 2 per batch (inference: 1).
    results = TOOL['main']([tiny_setup['cfg_file'], tiny_setup['ckpt'],
                            '--task', task, '--max-iter', '3',
                            '--num-warmup', '1', '--out', str(out)])
    result, = results
    assert result['iters'] == len(result['times']) == timed
    assert result['median_time'] == statistics.median(result['times'])
    assert result['images_per_second'] == pytest.approx(
        batch / result['median_time'])
    saved = json.loads(out.read_text())
    assert saved['task'] == task and saved['results'][0]['iters'] == timed
