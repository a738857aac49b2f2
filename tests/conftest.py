"""Shared test fixtures.

Tests that read ``../shared`` (real datasets, mmdetection reference outputs,
checkpoint key lists) use the fixtures below: in a user's clone without
``../shared`` they skip with the reason; with ``CI=true`` a missing
``shared`` folder is an error, so CI can never go green by skipping.
"""
import os
import os.path as osp

import pytest
import torch

REPO_ROOT = osp.dirname(osp.dirname(osp.abspath(__file__)))


def _find_shared():
    candidates = [
        os.environ.get('DETKIT_SHARED', ''),
        osp.join(REPO_ROOT, 'shared'),
        osp.join(osp.dirname(REPO_ROOT), 'shared'),
    ]
    for path in candidates:
        if path and osp.isdir(path):
            return path
    return None


SHARED_DIR = _find_shared()


def require_shared(*parts):
    """Path inside the shared folder, or skip (fail on CI) when absent."""
    if SHARED_DIR is not None and osp.exists(osp.join(SHARED_DIR, *parts)):
        return osp.join(SHARED_DIR, *parts)
    where = osp.join('../shared', *parts)
    if os.environ.get('CI', '').lower() == 'true':
        pytest.fail(f'{where} is missing, and CI=true requires it '
                    '(CI checks out shared/ beside the repository).')
    pytest.skip(f'{where} is not available (it exists only beside the '
                'project checkout, not in a user clone)')


@pytest.fixture
def bccd_dir():
    """``../shared/data/bccd``: 364 real 640x480 images, 3 classes."""
    return require_shared('data', 'bccd')


@pytest.fixture
def reference_dir():
    """``../shared/reference/mmdet-3.3.0``: mmdetection component outputs."""
    return require_shared('reference', 'mmdet-3.3.0')


@pytest.fixture
def compat_dir():
    """``../shared/compat``: mmdetection state_dict key/shape lists."""
    return require_shared('compat')


def load_reference(name):
    """Load one mmdetection reference file (plain tensors, weights_only)."""
    path = require_shared('reference', 'mmdet-3.3.0', name)
    return torch.load(path, weights_only=True)


def read_compat(name):
    """``{key: (shape tuple, dtype str)}`` from ``../shared/compat/NAME.txt``."""
    path = require_shared('compat', f'{name}.txt')
    keys = {}
    with open(path) as f:
        for line in f:
            if line.startswith('#') or not line.strip():
                continue
            key, shape, dtype = line.rstrip('\n').split('\t')
            dims = () if shape == '-' else tuple(
                int(d) for d in shape.split('x'))
            keys[key] = (dims, dtype)
    return keys


@pytest.fixture(autouse=True)
def _deterministic_threads():
    # Keep tests reproducible and polite on the 2-core CI machine.
    torch.manual_seed(0)
    yield
