"""Plain data: what ``torch.load(weights_only=True)`` accepts.

A detkit checkpoint holds only tensors (and torch dtypes, devices, sizes),
``None``/``bool``/``int``/``float``/``str``/``bytes``, and ``dict``,
``OrderedDict``, ``Counter``, ``list``, ``tuple`` and ``set`` of those.
:func:`to_plain` converts what mmengine's runner state holds into that form;
:func:`checkpoint_meta` reads a loaded checkpoint's ``meta`` that way.
"""
import collections
import logging

import numpy as np
import torch
from mmengine.logging import print_log

_DROP = object()  # marks a value to_plain cannot represent
_SCALARS = (bool, int, float, str, bytes, type(None))
_TORCH_PLAIN = (torch.Tensor, torch.device, torch.dtype, torch.Size)


def to_plain(obj, where='checkpoint', dropped=None):
    """Convert ``obj`` to tensors and plain data that ``weights_only``
    loads.

    numpy arrays become lists and numpy scalars Python numbers; dict, list
    and tuple subclasses (``defaultdict``, ``deque``, namedtuples,
    ``ConfigDict``) become their plain base; ``OrderedDict`` (with a state
    dict's ``_metadata``) and ``Counter`` stay, since ``weights_only``
    accepts them. Anything else (functions, bound methods, arbitrary
    objects) is left out; ``dropped`` collects ``'where: type'`` for each.
    """
    dropped = [] if dropped is None else dropped
    plain = _plain(obj, where, dropped)
    return None if plain is _DROP else plain


def _plain(obj, where, dropped):
    if type(obj) in _SCALARS or isinstance(obj, _TORCH_PLAIN):
        return obj
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, dict):
        return _plain_dict(obj, where, dropped)
    if isinstance(obj, (list, tuple, collections.deque)):
        items = []
        for i, item in enumerate(obj):
            item = _plain(item, f'{where}[{i}]', dropped)
            items.append(None if item is _DROP else item)
        return tuple(items) if isinstance(obj, tuple) else items
    if isinstance(obj, (set, frozenset)):
        items = (_plain(item, f'{where}{{}}', dropped) for item in obj)
        return {item for item in items if item is not _DROP}
    for base in (int, float, str):
        if isinstance(obj, base):
            # A subclass (IntEnum, ...): keep the value, not the class.
            return base(obj)
    neutralised = getattr(obj, 'neutralised_global', None)
    kind = (f'placeholder for {neutralised}' if neutralised else
            f'{type(obj).__module__}.{type(obj).__qualname__}')
    dropped.append(f'{where}: {kind}')
    return _DROP


def _plain_dict(obj, where, dropped):
    kind = type(obj) if type(obj) in (collections.OrderedDict,
                                      collections.Counter) else dict
    out = kind()
    for key, value in obj.items():
        plain_key = _plain(key, f'{where} key {key!r}', dropped)
        plain_value = _plain(value, f'{where}[{key!r}]', dropped)
        if plain_key is not _DROP and plain_value is not _DROP:
            out[plain_key] = plain_value
    metadata = getattr(obj, '_metadata', None)
    if metadata is not None and kind is collections.OrderedDict:
        # nn.Module versions, read back by _load_from_state_dict.
        out._metadata = _plain(metadata, f'{where}._metadata', dropped)
    return out


def checkpoint_meta(checkpoint, source='checkpoint'):
    """The ``meta`` dict of a loaded checkpoint, as plain data.

    A missing meta gives ``{}``. A meta that is not a dict (a placeholder
    for an object the safe loader refused, any foreign class) is ignored
    with one warning, ``meta of FILE is not plain data; ignored``; values
    inside it that are not plain data are dropped, also with a warning.
    """
    meta = checkpoint.get('meta') if isinstance(checkpoint, dict) else None
    if meta is None:
        return {}
    if not isinstance(meta, dict):
        neutralised = getattr(meta, 'neutralised_global', None)
        kind = (f'a placeholder for {neutralised}' if neutralised else
                f'a {type(meta).__module__}.{type(meta).__qualname__}')
        print_log(f'meta of {source} is not plain data ({kind}); ignored. '
                  'Class names and the config come from the config file.',
                  logger='current', level=logging.WARNING)
        return {}
    dropped = []
    plain = to_plain(meta, 'meta', dropped)
    if dropped:
        print_log(f'{source}: values of meta that are not plain data are '
                  f'ignored: {"; ".join(dropped)}', logger='current',
                  level=logging.WARNING)
    return plain
