"""Safe loaders for mmengine's ``CheckpointLoader`` schemes.

mmengine reads local files with ``torch.load``'s default and downloaded ones
with ``torch.hub.load_state_dict_from_url(weights_only=False)``, which runs
any code a pickle names. Importing this module (``import detkit.engine``
does) re-registers the schemes detkit configs use, so that mmengine's own
``load_checkpoint``, ``PretrainedInit`` (``init_cfg=dict(type='Pretrained',
checkpoint=...)``) and ``Runner.load_checkpoint`` read every file through
:func:`~detkit.engine.checkpoint.load_checkpoint_file`:

- local paths (prefix ``''``, the fallback for anything unmatched);
- ``http://`` and ``https://``: downloaded once into
  ``<torch hub dir>/checkpoints`` (rank 0 first, the other ranks after a
  barrier), then loaded safely;
- ``torchvision://`` / ``modelzoo://`` and ``open-mmlab://`` /
  ``openmmlab://``: names resolved with mmengine's URL tables, then as above.
"""
import logging
import os
import os.path as osp
from urllib.parse import urlparse

import torch
from mmengine.dist import barrier, get_dist_info
from mmengine.logging import print_log
from mmengine.runner.checkpoint import (CheckpointLoader, _get_mmengine_home,
                                        get_deprecated_model_names,
                                        get_external_models,
                                        get_torchvision_models)

from .checkpoint import load_checkpoint_file


def load_from_local_safely(filename, map_location=None):
    """Local checkpoint file, read without running code from it."""
    return load_checkpoint_file(filename, map_location=map_location)


def load_from_http_safely(url, map_location=None, model_dir=None):
    """Download ``url`` into the torch hub cache (once) and load it safely."""
    model_dir = model_dir or osp.join(torch.hub.get_dir(), 'checkpoints')
    cached = osp.join(model_dir, osp.basename(urlparse(url).path))
    rank, world_size = get_dist_info()
    if rank == 0:
        _download(url, cached)
    if world_size > 1:
        # Ranks on other machines do not see rank 0's disk: they download
        # too, but only after rank 0 has, so one machine fetches once.
        barrier()
        if rank > 0:
            _download(url, cached)
    return load_checkpoint_file(cached, map_location=map_location)


def _download(url, path):
    if osp.isfile(path):
        return
    os.makedirs(osp.dirname(path), exist_ok=True)
    print_log(f'Downloading {url} to {path}', logger='current')
    # download_url_to_file writes a temporary file and renames it.
    torch.hub.download_url_to_file(url, path, progress=False)


def load_from_torchvision_safely(filename, map_location=None):
    """``torchvision://resnet50`` (or the deprecated ``modelzoo://``)."""
    name = filename.split('://', 1)[1]
    urls = get_torchvision_models()
    if name not in urls:
        raise KeyError(f'{filename}: torchvision has no checkpoint named '
                       f'{name!r} (e.g. torchvision://resnet50).')
    return load_from_http_safely(urls[name], map_location=map_location)


def load_from_openmmlab_safely(filename, map_location=None):
    """``open-mmlab://vgg16_caffe``: a name in mmengine's OpenMMLab URL
    table, which maps to a URL or to a file under the mmengine home."""
    prefix, name = filename.split('://', 1)
    deprecated = get_deprecated_model_names()
    if name in deprecated:
        print_log(f'{prefix}://{name} is deprecated in favour of '
                  f'{prefix}://{deprecated[name]}',
                  logger='current', level=logging.WARNING)
        name = deprecated[name]
    urls = get_external_models()
    if name not in urls:
        raise KeyError(f'{filename}: no OpenMMLab checkpoint named {name!r} '
                       "in mmengine's hub/openmmlab.json.")
    url = urls[name]
    if url.startswith(('http://', 'https://')):
        return load_from_http_safely(url, map_location=map_location)
    return load_checkpoint_file(
        osp.join(_get_mmengine_home(), url), map_location=map_location)


def register_safe_loaders():
    """(Re-)register detkit's loaders over mmengine's, for these schemes."""
    for prefixes, loader in [
        ('', load_from_local_safely),
        (('http://', 'https://'), load_from_http_safely),
        (('torchvision://', 'modelzoo://'), load_from_torchvision_safely),
        (('open-mmlab://', 'openmmlab://'), load_from_openmmlab_safely),
    ]:
        CheckpointLoader.register_scheme(prefixes, loader, force=True)


register_safe_loaders()
