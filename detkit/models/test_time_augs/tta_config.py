"""What ``tools/test.py --tta`` does to a config (mmdetection's rule)."""
import copy
import warnings

from mmengine.config import ConfigDict

# The merge mmdetection's tools use when a config names no tta_model.
DEFAULT_TTA_MODEL = dict(
    type='DetTTAModel',
    tta_cfg=dict(nms=dict(type='nms', iou_threshold=0.5), max_per_img=100))
# Packing for views: the flip keys are what DetTTAModel un-flips with.
TTA_META_KEYS = ('img_id', 'img_path', 'ori_shape', 'img_shape',
                 'scale_factor', 'flip', 'flip_direction')


def _innermost(dataset_cfg) -> list:
    if 'dataset' in dataset_cfg:
        return _innermost(dataset_cfg['dataset'])
    if 'datasets' in dataset_cfg:
        return [d for sub in dataset_cfg['datasets'] for d in _innermost(sub)]
    return [dataset_cfg]


def default_flip_tta_pipeline(test_pipeline: list) -> list:
    """The test pipeline with its last step (``PackDetInputs``) replaced by
    two views, flipped horizontally and not, each packed with the flip
    keys."""
    pipeline = copy.deepcopy(list(test_pipeline))
    if not pipeline:
        raise ValueError('--tta: the test dataset has an empty pipeline')
    pipeline[-1] = dict(
        type='TestTimeAug',
        transforms=[[dict(type='RandomFlip', prob=1.),
                     dict(type='RandomFlip', prob=0.)],
                    [dict(type='PackDetInputs', meta_keys=TTA_META_KEYS)]])
    return pipeline


def enable_tta(cfg):
    """Test ``cfg`` with test-time augmentation, in place.

    ``cfg.model`` becomes ``cfg.tta_model`` wrapped around it, and the test
    datasets (inside any wrapper) get ``cfg.tta_pipeline``. A config without
    ``tta_model`` gets :data:`DEFAULT_TTA_MODEL`, one without
    ``tta_pipeline`` :func:`default_flip_tta_pipeline` of its test pipeline;
    each with a warning. Returns ``cfg``.
    """
    if 'tta_model' not in cfg:
        warnings.warn('--tta: the config has no tta_model; using '
                      f'{DEFAULT_TTA_MODEL}')
        cfg.tta_model = copy.deepcopy(DEFAULT_TTA_MODEL)
    datasets = _innermost(cfg.test_dataloader.dataset)
    if 'tta_pipeline' not in cfg:
        warnings.warn('--tta: the config has no tta_pipeline; testing on '
                      'the test pipeline with and without a horizontal '
                      'flip')
        cfg.tta_pipeline = default_flip_tta_pipeline(datasets[0].pipeline)
    cfg.model = ConfigDict(**cfg.tta_model, module=cfg.model)
    for dataset in datasets:
        dataset.pipeline = copy.deepcopy(cfg.tta_pipeline)
    return cfg
