"""tools/dist_test.sh --report with 2 CPU processes: the main process
writes one page, with the numbers of the one-process page (5 images: rank
1's share is padded with image 0 again, which must not count twice)."""
import os.path as osp
import sys

from mmengine.config import Config
from mmengine.registry import DefaultScope
from report_page import parse_page
from toolbox_toys import REPO_ROOT, run_tool

from detkit.engine import save_checkpoint_file
from detkit.registry import MODELS

sys.path.insert(0, osp.join(REPO_ROOT, 'tests', 'test_engine'))
from test_dist_common import (free_port, make_shapes_data,  # noqa: E402
                              run_script, write_config)

TEST = run_tool('tools', 'test.py', run_name='detkit_tools_test_report')


def _numbers(path):
    page = parse_page(open(path, encoding='utf-8').read())
    tables = {
        name: [[c.get('data-value', c.get('data-count', c['text']))
                for c in row] for row in page['tables'][name]]
        for name in ('metrics-table', 'class-table', 'confusion',
                     'error-table')
    }
    figures = [(f['data-kind'], f['data-image'], f['data-ap'])
               for f in page['figures']]
    return tables, figures


def test_two_process_report_equals_one_process_report(tmp_path):
    data_root = make_shapes_data(tmp_path / 'data', num_train=2, num_val=5)
    # Batch 1 and every box kept, as in test_dist_test.py: the processes
    # predict exactly what one process does.
    cfg_file = write_config(
        tmp_path / 'retina_report.py', data_root,
        test_dataloader=dict(batch_size=1),
        model=dict(test_cfg=dict(nms_pre=1000, min_bbox_size=0,
                                 score_thr=0.0,
                                 nms=dict(type='nms', iou_threshold=0.5),
                                 max_per_img=100)))
    cfg = Config.fromfile(cfg_file)
    with DefaultScope.overwrite_default_scope('detkit'):
        model = MODELS.build(cfg.model)
    model.init_weights()
    ckpt = str(tmp_path / 'init.pth')
    save_checkpoint_file(dict(state_dict=model.state_dict(), meta=dict()),
                         ckpt)

    dist_dir, one_dir = tmp_path / 'dist', tmp_path / 'one'
    rc, out, _ = run_script(
        'dist_test.sh', cfg_file, ckpt, 2, '--work-dir', dist_dir,
        '--report', dist_dir / 'report.html', cwd=tmp_path, timeout=240,
        PORT=free_port())
    assert rc == 0, out[-5000:]
    assert out.count('Evaluation report written to') == 1
    TEST['main']([cfg_file, ckpt, '--work-dir', str(one_dir), '--report',
                  str(one_dir / 'report.html')])
    dist_tables, dist_figures = _numbers(dist_dir / 'report.html')
    one_tables, one_figures = _numbers(one_dir / 'report.html')
    assert dist_tables == one_tables
    assert dist_figures == one_figures
    # 5 images: the gallery shows each once per side, never the padding.
    assert sorted(name for kind, name, _ in one_figures
                  if kind == 'worst') == sorted(
                      f'val_{i:06d}.jpg' for i in range(5))
