"""tools/misc/print_config.py: the merged config, overrides applied."""
from mmengine.config import Config
from toolbox_toys import REPO_ROOT, run_tool

CONFIG = f'{REPO_ROOT}/configs/retinanet/retinanet_r50_fpn_1x_coco.py'


def test_prints_and_saves_the_merged_config(tmp_path, capsys):
    saved = str(tmp_path / 'full.py')
    text = run_tool('tools', 'misc', 'print_config.py')['main']([
        CONFIG, '--save-path', saved, '--cfg-options',
        'model.bbox_head.num_classes=3', 'train_cfg.max_epochs=24'
    ])
    printed = capsys.readouterr().out
    assert printed.startswith('Config:\n') and text in printed
    reread = Config.fromstring(text, '.py')
    assert reread.model.bbox_head.num_classes == 3
    assert reread.train_cfg.max_epochs == 24
    # _base_ files merged: the schedule and runtime are all there.
    assert reread.optim_wrapper.optimizer.lr == 0.01
    assert reread.default_hooks.visualization.type == 'DetVisualizationHook'
    expected = Config.fromfile(CONFIG)
    expected.merge_from_dict({'model.bbox_head.num_classes': 3,
                              'train_cfg.max_epochs': 24})
    assert Config.fromfile(saved).to_dict() == expected.to_dict()
