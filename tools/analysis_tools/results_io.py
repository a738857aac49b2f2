"""What the result-file tools share: configs, a safe reader for
``tools/test.py --out`` files, the test set, and showing a picture.

A results file is mmengine's ``DumpResults`` pickle: a list with one dict
per test image, ``img_id``, ``img_path``, ``ori_shape``, ``scale_factor``
..., ``pred_instances`` (``bboxes (K, 4)`` xyxy original-image pixels,
``scores (K,)``, ``labels (K,)`` CPU tensors) and the ground truth the test
pipeline loaded (``gt_instances``, ``ignored_instances``).

The numbers the tools print (ground truth, confusion matrix, per-image AP,
COCO arrays) live in :mod:`detkit.evaluation.analysis`; ``as_array``,
``predictions``, ``ground_truth`` and ``match_results`` are re-exported from
there for the scripts.

Scripts import this module after putting their own folder on ``sys.path``.
"""
import io
import os
import os.path as osp
import sys

import torch
from mmengine.config import Config

from detkit.evaluation.analysis import (as_array, ground_truth,  # noqa: F401
                                        match_results, predictions)


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


def build_test_dataset(cfg):
    from detkit.registry import DATASETS
    loader = cfg.get('test_dataloader') or cfg.get('val_dataloader')
    return DATASETS.build(loader['dataset'])


def evaluator_cfg(cfg, path):
    """The config's ``test_evaluator``, else its ``val_evaluator``."""
    found = cfg.get('test_evaluator') or cfg.get('val_evaluator')
    if not found:
        raise SystemExit(f'{path} has no test_evaluator or val_evaluator')
    return found


def has_display():
    """Whether a window can open: always on Windows and macOS; on Linux only
    with an X11 or Wayland display."""
    if sys.platform.startswith(('win', 'darwin')):
        return True
    return bool(os.environ.get('DISPLAY') or os.environ.get('WAYLAND_DISPLAY'))


def show_picture(path, title=None, wait_time=0.0):
    """``--show``: open the picture saved at ``path`` in an OpenCV window
    for ``wait_time`` seconds (0: until a key is pressed). Returns False,
    after saying why, where no window can open (a headless machine, or an
    OpenCV built without a GUI); the caller carries on."""
    import cv2
    if not has_display():
        print(f'--show: no display on this machine (DISPLAY is not set); '
              f'the picture is saved at {path}')
        return False
    image = cv2.imread(path, cv2.IMREAD_COLOR)
    if image is None:
        print(f'--show: cannot read {path}')
        return False
    try:
        cv2.imshow(title or osp.basename(path), image)
        cv2.waitKey(int(wait_time * 1000))
    except cv2.error as err:
        print(f'--show: OpenCV cannot open a window here ({err}); the '
              f'picture is saved at {path}')
        return False
    return True
