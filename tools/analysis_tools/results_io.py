"""What the result-file tools share: configs, a safe reader for
``tools/test.py --out`` files, and the test set's ground truth.

A results file is mmengine's ``DumpResults`` pickle: a list with one dict
per test image, ``img_id``, ``img_path``, ``ori_shape``, ``scale_factor``
..., ``pred_instances`` (``bboxes (K, 4)`` xyxy original-image pixels,
``scores (K,)``, ``labels (K,)`` CPU tensors) and the ground truth the test
pipeline loaded (``gt_instances``, ``ignored_instances``).

Scripts import this module after putting their own folder on ``sys.path``.
"""
import io
import os.path as osp

import numpy as np
import torch
from mmengine.config import Config


def load_cfg(path, cfg_options=None):
    """The config with ``--cfg-options`` merged and ``default_scope`` set
    (and made current, so registries find detkit's components)."""
    from mmengine.registry import init_default_scope
    if not osp.isfile(path):
        raise FileNotFoundError(f'config file not found: {path}')
    cfg = Config.fromfile(path)
    if cfg_options:
        cfg.merge_from_dict(cfg_options)
    from detkit.utils import to_detkit_scope
    to_detkit_scope(cfg, source=path)  # mmdetection configs run as they are
    init_default_scope(cfg.default_scope)
    return cfg


def _storage_from_bytes(data):
    # Plain pickles store each tensor's storage as torch.save bytes.
    return torch.load(io.BytesIO(data), weights_only=True)


def _encode(text, encoding='latin1'):
    # Protocol-2 pickles spell bytes as _codecs.encode(str, 'latin1').
    return text.encode(encoding)


def load_results(path):
    """Read a results ``.pkl`` without running code from it: detkit's
    restricted unpickler, which also rebuilds the tensors that a plain
    pickle holds (storages saved as ``torch.save`` bytes, read back with
    ``weights_only=True``)."""
    from detkit.engine import RestrictedPickleModule
    if not osp.isfile(path):
        raise FileNotFoundError(f'results file not found: {path} (write one '
                                'with tools/test.py CONFIG CKPT --out FILE)')
    module = RestrictedPickleModule()
    extra = {('torch.storage', '_load_from_bytes'): _storage_from_bytes,
             ('_codecs', 'encode'): _encode}
    resolve = module.resolve
    module.resolve = lambda mod, name: extra.get((mod, name)) or resolve(
        mod, name)
    with open(path, 'rb') as f:
        results = module.load(f)
    if not isinstance(results, list) or not all(
            isinstance(r, dict) and 'pred_instances' in r for r in results):
        raise ValueError(f'{path} is not a tools/test.py --out file (a list '
                         'of dicts with pred_instances)')
    if module.neutralised:
        raise ValueError(f'{path} holds objects that are not plain data: '
                         f'{sorted(module.neutralised)}')
    return results


def as_array(value, shape=None):
    value = value.numpy() if isinstance(value, torch.Tensor) else np.asarray(
        value)
    return value if shape is None else value.reshape(shape)


def predictions(result):
    """``(bboxes (K, 4), scores (K,), labels (K,))`` numpy arrays."""
    pred = result['pred_instances']
    return (as_array(pred['bboxes'], (-1, 4)).astype(np.float64),
            as_array(pred['scores'], -1).astype(np.float64),
            as_array(pred['labels'], -1).astype(np.int64))


def build_test_dataset(cfg):
    from detkit.registry import DATASETS
    loader = cfg.get('test_dataloader') or cfg.get('val_dataloader')
    return DATASETS.build(loader['dataset'])


def ground_truth(dataset):
    """``{img_id: dict(img_path, bboxes (G, 4), labels (G,), ignore (G,)
    bool)}`` from the dataset's annotations (original pixels)."""
    truth = {}
    for idx in range(len(dataset)):
        info = dataset.get_data_info(idx)
        instances = info.get('instances', [])
        truth[info['img_id']] = dict(
            img_path=info['img_path'],
            bboxes=np.array([i['bbox'] for i in instances],
                            dtype=np.float64).reshape(-1, 4),
            labels=np.array([i['bbox_label'] for i in instances],
                            dtype=np.int64),
            ignore=np.array([i.get('ignore_flag', 0) for i in instances],
                            dtype=bool))
    return truth


def match_results(results, truth, path='the results file'):
    """Pairs ``(result, its ground truth)``, matched by ``img_id``."""
    missing = [r['img_id'] for r in results if r['img_id'] not in truth]
    if missing:
        raise KeyError(f'{path}: images {missing[:5]} are not in the '
                       'config\'s test dataset; use the config the results '
                       'were made with')
    return [(r, truth[r['img_id']]) for r in results]
