"""State-dict key lists: what a checkpoint of a model holds, as text.

One line per tensor, ``key<TAB>shape<TAB>dtype``, shape dims joined by
``x`` (``-`` for a scalar), lines starting with ``#`` ignored::

    backbone.conv1.weight	64x3x7x7	float32
    backbone.bn1.num_batches_tracked	-	int64

A model whose ``state_dict`` holds exactly a checkpoint's keys, shapes and
dtypes loads it with ``strict=True``. Models are built on the ``meta``
device to compare (:func:`build_model_cheaply`): no memory, no
initialisation, the same names, shapes and dtypes as a CPU build.
"""
import copy
import os.path as osp
from typing import Dict, List, Optional, Tuple

import torch
from mmengine.registry import DefaultScope

KeyList = Dict[str, Tuple[Tuple[int, ...], str]]


def read_key_list(path: str) -> KeyList:
    """``{key: (shape, dtype)}`` from a key list file (see the module
    docstring for the format)."""
    keys = {}
    with open(path) as f:
        for num, line in enumerate(f, 1):
            if line.startswith('#') or not line.strip():
                continue
            parts = line.rstrip('\n').split('\t')
            if len(parts) != 3:
                raise ValueError(f'{path}:{num}: expected key<TAB>shape<TAB>'
                                 f'dtype, got {line.strip()!r}')
            key, shape, dtype = parts
            dims = () if shape == '-' else tuple(
                int(d) for d in shape.split('x'))
            keys[key] = (dims, dtype)
    return keys


def state_dict_keys(model) -> KeyList:
    """The same ``{key: (shape, dtype)}`` for a model's ``state_dict``."""
    return {
        key: (tuple(value.shape), str(value.dtype).replace('torch.', ''))
        for key, value in model.state_dict().items()
    }


def compare_keys(actual: KeyList, expected: KeyList) -> List[str]:
    """Differences between two key lists, one summary line per kind
    (missing / unexpected / shape or dtype), naming the first few keys."""

    def names(keys, limit=3):
        shown = ', '.join(keys[:limit])
        return shown + (f', ... ({len(keys)} in all)'
                        if len(keys) > limit else '')

    missing = [k for k in expected if k not in actual]
    unexpected = [k for k in actual if k not in expected]
    differ = [
        f'{k} (model {_fmt(actual[k])}, list {_fmt(expected[k])})'
        for k in expected if k in actual and actual[k] != expected[k]
    ]
    problems = []
    if missing:
        problems.append(f'{len(missing)} keys of the list missing in the '
                        f'model: {names(missing)}')
    if unexpected:
        problems.append(f'{len(unexpected)} model keys not in the list: '
                        f'{names(unexpected)}')
    if differ:
        problems.append(f'{len(differ)} shape/dtype mismatches: '
                        f'{names(differ, 2)}')
    return problems


def _fmt(entry) -> str:
    shape, dtype = entry
    return f"{'x'.join(map(str, shape)) or '-'} {dtype}"


def build_model_cheaply(model_cfg):
    """``MODELS.build(model_cfg)`` on the ``meta`` device (no memory, no
    initialisation), in the detkit scope."""
    from detkit.registry import MODELS
    with DefaultScope.overwrite_default_scope('detkit'), torch.device('meta'):
        return MODELS.build(copy.deepcopy(model_cfg))


def key_list_for(compat_dir: Optional[str], rel_path: str) -> Optional[str]:
    """``compat_dir/<folder>/<name>.txt`` for ``<folder>/<name>.py``."""
    if compat_dir is None:
        return None
    return osp.join(compat_dir, osp.splitext(rel_path)[0] + '.txt')
