"""Build a detector from a config (+ checkpoint) and run it on images."""
import copy
import os.path as osp
from typing import List, Optional, Sequence, Union

import numpy as np
import torch
from mmengine.config import Config
from mmengine.dataset import Compose
from mmengine.registry import DefaultScope

from ..registry import MODELS
from ..utils.scope import to_detkit_scope

ImageLike = Union[str, np.ndarray]


def _load_config(config) -> Config:
    if isinstance(config, (str, bytes)) or hasattr(config, '__fspath__'):
        path = str(config)
        if not osp.isfile(path):
            raise FileNotFoundError(f'config file not found: {path}')
        return Config.fromfile(path)
    if isinstance(config, Config):
        return copy.deepcopy(config)
    raise TypeError('config must be a file path or a mmengine Config, '
                    f'got {type(config).__name__}')


def init_detector(config,
                  checkpoint: Optional[str] = None,
                  palette: str = 'none',
                  device: str = 'cpu',
                  cfg_options: Optional[dict] = None,
                  fuse_conv_bn: bool = False,
                  channels_last: bool = True,
                  allow_partial: bool = False):
    """A detector in eval mode on ``device``, ready for
    :func:`inference_detector`.

    Args:
        config: config file path or ``Config``.
        checkpoint: detkit or mmdetection checkpoint; loaded through
            detkit's safe loader (no code from the file ever runs).
            None keeps the initial weights (pretrained backbones are not
            fetched).
        palette: unused placeholder kept for mmdetection's signature.
        device: ``'cpu'``, ``'cuda'``, ``'cuda:1'``, ... (checked first:
            see :func:`check_device`).
        cfg_options: overrides merged into the config (their top-level
            keys are checked as for ``--cfg-options``).
        fuse_conv_bn: fold every BatchNorm into the conv before it
            (:func:`detkit.models.layers.fuse_conv_bn`): the same
            predictions up to float rounding, one pass over each activation
            fewer. Off by default because the folded model's ``state_dict``
            lacks the norm keys and it must not be trained further.
        channels_last: store conv weights (and so activations) in
            channels-last memory format, which oneDNN's CPU convolutions
            and cuDNN's tensor-core kernels prefer (on by default: the
            same predictions up to float rounding, COCO mAP the same to 3
            decimals). ``channels_last=False`` keeps NCHW, whose
            arithmetic is mmdetection's bit for bit.
        allow_partial: use a checkpoint even when it holds fewer than half
            of the model's weights (the others keep their random initial
            values). By default such a checkpoint (another model's file, an
            empty state_dict) raises
            :class:`~detkit.engine.checkpoint.PartialCheckpointError`
            naming the counts and example keys of both sides.

    The model's ``dataset_meta`` (class names, palette) comes from the
    checkpoint's meta when present, else from the config's test dataset.
    """
    from ..engine.checkpoint import load_checkpoint
    from ..engine.launch import check_cfg_options
    from ..engine.plain_data import checkpoint_meta
    device = check_device(device)
    cfg = _load_config(config)
    if cfg_options:
        check_cfg_options(cfg, cfg_options,
                          getattr(cfg, 'filename', None) or 'the config',
                          flag='cfg_options')
        cfg.merge_from_dict(cfg_options)
    to_detkit_scope(cfg)  # mmdetection's configs run as they are
    # Never download weights while building a model for inference: the
    # checkpoint (or, without one, a random init) replaces them.
    model_cfg = copy.deepcopy(cfg.model)
    _drop_pretrained(model_cfg)
    with DefaultScope.overwrite_default_scope(cfg.default_scope):
        model = MODELS.build(model_cfg)
    if checkpoint is None:
        model.init_weights()
    dataset_meta = None
    if checkpoint is not None:
        ckpt = load_checkpoint(model, checkpoint, map_location='cpu',
                               allow_partial=allow_partial)
        dataset_meta = checkpoint_meta(ckpt, checkpoint).get('dataset_meta')
        if not isinstance(dataset_meta, dict):
            dataset_meta = None
    if not dataset_meta:
        dataset_meta = _dataset_meta_from_cfg(cfg)
    model.dataset_meta = dataset_meta
    model.cfg = cfg
    model.to(device)
    model.eval()
    optimize_for_inference(model, fuse_conv_bn, channels_last)
    return model


def check_device(device) -> str:
    """``device`` if torch can use it here, else a one-line error saying
    why and what to pass instead (a CUDA device without a GPU, an index
    beyond the visible GPUs, a name torch does not know)."""
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError):
        raise ValueError(f'device {device!r} is not a torch device name; '
                         "use 'cpu', 'cuda' or 'cuda:N'.") from None
    if dev.type == 'cuda':
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if count == 0:
            build = ('this torch build has no CUDA support'
                     if torch.version.cuda is None else
                     f'this torch build (CUDA {torch.version.cuda}) sees no '
                     'GPU')
            raise RuntimeError(f'device {device!r}: no CUDA GPU is '
                               f"available ({build}); use device='cpu' "
                               '(--device cpu).')
        if dev.index is not None and dev.index >= count:
            raise RuntimeError(
                f'device {device!r}: only {count} CUDA GPU(s) are visible '
                f'(cuda:0 to cuda:{count - 1}).')
    return device


def optimize_for_inference(model, fuse_conv_bn: bool = False,
                           channels_last: bool = False):
    """Apply the inference-only speed-ups of :func:`init_detector` to an
    eval-mode model in place (see there) and return it."""
    if fuse_conv_bn:
        from ..models.layers import fuse_conv_bn as fuse
        fuse(model)
    if channels_last:
        model.to(memory_format=torch.channels_last)
    return model


def _drop_pretrained(cfg) -> None:
    """Remove ``Pretrained`` init_cfgs (the checkpoint overrides them)."""
    if isinstance(cfg, dict):
        init_cfg = cfg.get('init_cfg')
        if isinstance(init_cfg, dict) and init_cfg.get('type') == 'Pretrained':
            cfg['init_cfg'] = None
        for value in cfg.values():
            _drop_pretrained(value)
    elif isinstance(cfg, list):
        for value in cfg:
            _drop_pretrained(value)


def _dataset_meta_from_cfg(cfg) -> dict:
    """Class names from the config's test dataset (its ``metainfo`` or its
    class's ``METAINFO``)."""
    from ..registry import DATASETS
    dataloader = cfg.get('test_dataloader') or cfg.get('val_dataloader')
    if not dataloader:
        return {}
    dataset_cfg = dataloader['dataset']
    while 'dataset' in dataset_cfg:  # wrappers such as RepeatDataset
        dataset_cfg = dataset_cfg['dataset']
    meta = dict(dataset_cfg.get('metainfo') or {})
    if 'classes' not in meta:
        with DefaultScope.overwrite_default_scope('detkit'):
            dataset_cls = DATASETS.get(dataset_cfg['type'])
        meta = dict(getattr(dataset_cls, 'METAINFO', {}) or {}, **meta)
    return meta


def build_test_pipeline(cfg, from_ndarray: bool = False) -> Compose:
    """The config's test pipeline without annotation loading; with
    ``from_ndarray`` the first step reads ``results['img']`` instead of a
    file."""
    dataloader = cfg.get('test_dataloader') or cfg.get('val_dataloader')
    dataset_cfg = dataloader['dataset']
    while 'dataset' in dataset_cfg:
        dataset_cfg = dataset_cfg['dataset']
    steps = [
        copy.deepcopy(step) for step in dataset_cfg['pipeline']
        if step['type'] != 'LoadAnnotations'
    ]
    if from_ndarray:
        steps[0] = dict(type='LoadImageFromNDArray')
    with DefaultScope.overwrite_default_scope('detkit'):
        return Compose(steps)


@torch.no_grad()
def inference_detector(model,
                       imgs: Union[ImageLike, Sequence[ImageLike]],
                       test_pipeline: Optional[Compose] = None,
                       batch_size: int = 1):
    """Detect objects in one image or a list of them.

    Args:
        model: from :func:`init_detector`.
        imgs: file path(s) or BGR uint8 ``(H, W, 3)`` array(s).
        batch_size: images per forward pass.

    Returns:
        A ``DetDataSample`` (or a list, if a list was given) whose
        ``pred_instances`` hold ``bboxes`` in original-image pixels,
        ``scores`` and ``labels``.
    """
    single = isinstance(imgs, (str, np.ndarray))
    imgs = [imgs] if single else list(imgs)
    if not imgs:
        return []
    cfg = model.cfg
    pipelines = {}
    results: List = []
    for start in range(0, len(imgs), batch_size):
        inputs, samples = [], []
        for i, img in enumerate(imgs[start:start + batch_size]):
            from_ndarray = isinstance(img, np.ndarray)
            pipeline = test_pipeline or pipelines.setdefault(
                from_ndarray, build_test_pipeline(cfg, from_ndarray))
            data = dict(img=img, img_id=start + i) if from_ndarray else \
                dict(img_path=img, img_id=start + i)
            packed = pipeline(data)
            inputs.append(packed['inputs'])
            samples.append(packed['data_samples'])
        results.extend(
            model.test_step(dict(inputs=inputs, data_samples=samples)))
    return results[0] if single else results
