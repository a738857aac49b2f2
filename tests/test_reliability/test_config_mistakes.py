"""Config mistakes stop ``tools/train.py`` before the first iteration, with
an error that names the key and the value expected."""
import re
import runpy

import pytest
from mmengine.registry import DefaultScope
from reliability_toys import TRAIN_TOOL, make_shapes, tiny_cfg
from reliability_toys import one_thread  # noqa: F401 (a fixture)

from detkit.registry import MODELS

pytestmark = pytest.mark.usefixtures('one_thread')

TRAIN = runpy.run_path(TRAIN_TOOL, run_name='detkit_tools_train')


@pytest.fixture(scope='module')
def cfg_file(tmp_path_factory):
    root = tmp_path_factory.mktemp('mistakes')
    cfg = tiny_cfg(make_shapes(root / 'shapes'), root / 'unused',
                   log_level='WARNING')
    cfg.pop('experiment_name')
    path = str(root / 'tiny.py')
    cfg.dump(path)
    return path


@pytest.mark.parametrize('option, error, message', [
    ('model.bbox_head.num_clases=5', TypeError,
     "RetinaHead (from the model registry) got an unexpected config key "
     "'num_clases'. Did you mean 'num_classes'?"),
    ('model.bbox_head.type=RetinaHaed', KeyError,
     "'RetinaHaed' is not in the model registry (scope 'detkit'). Closest "
     'registered names: RetinaHead'),
    ('model.neck.in_channels=[16,32,32]', ValueError,
     'model.neck.in_channels is [16, 32, 32], but the backbone (ResNet-18, '
     'out_indices=(1, 2, 3)) outputs [16, 32, 64] channels; set '
     'model.neck.in_channels=[16, 32, 64]'),
    ('model.bbox_head.num_classes=3', ValueError,
     "model.bbox_head.num_classes is 3, but the training dataset has 5 "
     "classes ('circle', 'square', 'triangle', 'star', 'cross'). Set "
     'model.bbox_head.num_classes=5 in the config'),
])
def test_mistake_fails_before_training(cfg_file, tmp_path, option, error,
                                       message):
    work_dir = tmp_path / 'work'
    with pytest.raises(error, match=re.escape(message)):
        TRAIN['main']([cfg_file, '--work-dir', str(work_dir),
                       '--cfg-options', option,
                       f'experiment_name=mistake_{tmp_path.name}'])
    assert not list(work_dir.rglob('*.pth'))
    assert not list(work_dir.rglob('scalars.json'))  # nothing logged


@pytest.mark.parametrize('cfg, key, suggestion', [
    # RetinaHead and RPNHead pass **kwargs on to AnchorHead, the shared
    # box heads to ConvFCBBoxHead and BBoxHead: their keys count too.
    (dict(type='RPNHead', in_channels=8, feat_chanels=8), 'feat_chanels',
     'feat_channels'),
    (dict(type='Shared2FCBBoxHead', in_channels=8, num_clases=3),
     'num_clases', 'num_classes'),
    (dict(type='Shared2FCBBoxHead', fc_out_channel=8), 'fc_out_channel',
     'fc_out_channels'),
])
def test_misspelled_keys_of_heads_that_forward_kwargs(cfg, key, suggestion):
    with DefaultScope.overwrite_default_scope('detkit'):
        with pytest.raises(TypeError) as err:
            MODELS.build(cfg)
    assert f"got an unexpected config key '{key}'. Did you mean " \
        f"'{suggestion}'" in str(err.value)


def test_keys_of_parent_constructors_are_accepted():
    with DefaultScope.overwrite_default_scope('detkit'):
        head = MODELS.build(dict(type='Shared2FCBBoxHead', in_channels=4,
                                 fc_out_channels=8, roi_feat_size=2,
                                 num_classes=3))
    assert head.num_classes == 3
    assert head.shared_fcs[0].in_features == 4 * 2 * 2
    assert head.shared_fcs[-1].out_features == 8
