"""Registry errors name the registry, the bad name and the closest names."""
import pytest
from mmengine.registry import DefaultScope

from detkit.registry import MODELS, TASK_UTILS, TRANSFORMS


def test_unknown_type_names_registry_and_closest_names():
    with DefaultScope.overwrite_default_scope('detkit'):
        with pytest.raises(KeyError) as err:
            MODELS.build(dict(type='RetinaHeed', num_classes=3,
                              in_channels=8))
    msg = str(err.value)
    assert "'RetinaHeed' is not in the model registry" in msg
    assert 'RetinaHead' in msg.split('Closest registered names:')[1]


def test_unknown_transform_suggests_the_real_one():
    with pytest.raises(KeyError, match=r"transform registry.*Resize"):
        TRANSFORMS.build(dict(type='Resise', scale=(10, 10)))


def test_misspelled_key_suggests_the_parameter():
    with DefaultScope.overwrite_default_scope('detkit'):
        with pytest.raises(TypeError) as err:
            TASK_UTILS.build(
                dict(type='MaxIoUAssigner', pos_iou_thr=0.5,
                     neg_iou_thr=0.4, min_pos_iuo=0))
    assert "unexpected config key 'min_pos_iuo'" in str(err.value)
    assert "'min_pos_iou'" in str(err.value)


def test_mmengine_types_still_build_from_detkit_scope():
    import torch
    from mmengine.registry import OPTIMIZERS
    with DefaultScope.overwrite_default_scope('detkit'):
        from detkit.registry import OPTIMIZERS as DET_OPTIMIZERS
        opt = DET_OPTIMIZERS.build(
            dict(type='SGD', lr=0.1, params=[torch.nn.Parameter(
                torch.zeros(1))]))
    assert isinstance(opt, torch.optim.SGD)
    assert opt.param_groups[0]['lr'] == 0.1
    assert OPTIMIZERS.get('SGD') is torch.optim.SGD
