"""The message hub's state as plain data, and back.

mmengine's ``MessageHub.state_dict()`` holds a ``HistoryBuffer`` object per
log scalar (``train/loss``, ``train/lr``, ...), which
``torch.load(weights_only=True)`` refuses. detkit checkpoints store instead::

    {'log_scalars': {'train/loss': {'log_history': [...],
                                    'count_history': [...],
                                    'max_length': 1000000}, ...},
     'runtime_info': {...},   # plain values only
     'resumed_keys': {...}}

and :func:`message_hub_from_plain` rebuilds the ``HistoryBuffer`` objects
before mmengine's ``MessageHub.load_state_dict`` sees them. It also accepts
checkpoints saved by plain mmengine, whose buffers arrive either as real
``HistoryBuffer`` objects or, when read through the restricted unpickler, as
neutralised placeholders holding the buffer's ``__dict__``.
"""
import logging

import numpy as np
from mmengine.logging import HistoryBuffer, print_log

from .plain_data import to_plain
from .safe_unpickler import NeutralisedObject

_HISTORY_BUFFER = 'mmengine.logging.history_buffer.HistoryBuffer'


def message_hub_to_plain(state_dict):
    """Plain form of ``MessageHub.state_dict()``.

    Returns:
        tuple: ``(plain_state, dropped)``; ``dropped`` lists the
        ``runtime_info`` values (``'runtime_info[key]: type'``) that are not
        plain data and were left out; mmengine rebuilds those at run time.
    """
    scalars = {}
    for key, buffer in state_dict['log_scalars'].items():
        logs, counts = buffer.data
        scalars[key] = dict(
            log_history=np.asarray(logs).tolist(),
            count_history=np.asarray(counts).tolist(),
            max_length=int(buffer.max_length))
    dropped = []
    runtime_info = to_plain(dict(state_dict['runtime_info']),
                            'runtime_info', dropped)
    return dict(
        log_scalars=scalars,
        runtime_info=runtime_info,
        resumed_keys=dict(state_dict['resumed_keys'])), dropped


def message_hub_from_plain(state):
    """Inverse of :func:`message_hub_to_plain`: a state dict that
    ``MessageHub.load_state_dict`` accepts, with ``HistoryBuffer`` objects.
    """
    scalars = {}
    for key, value in state.get('log_scalars', {}).items():
        buffer = _to_history_buffer(value)
        if buffer is None:
            print_log(
                f'message_hub log scalar {key!r} is a {type(value).__name__}'
                ', not a HistoryBuffer or its plain form; its history is not '
                'resumed.',
                logger='current',
                level=logging.WARNING)
            continue
        scalars[key] = buffer
    runtime_info = {
        key: value
        for key, value in state.get('runtime_info', {}).items()
        if not isinstance(value, NeutralisedObject)
    }
    return dict(
        log_scalars=scalars,
        runtime_info=runtime_info,
        resumed_keys=dict(state.get('resumed_keys', {})))


def _to_history_buffer(value):
    if isinstance(value, HistoryBuffer):
        return value
    if isinstance(value, dict) and 'log_history' in value:
        return HistoryBuffer(value['log_history'], value['count_history'],
                             value['max_length'])
    if (isinstance(value, NeutralisedObject)
            and value.neutralised_global == _HISTORY_BUFFER
            and isinstance(value.state, dict)):
        # A plain mmengine checkpoint read by the restricted unpickler: the
        # placeholder holds HistoryBuffer.__dict__ (numpy arrays, rebuilt
        # by the allowed numpy reconstructors).
        state = value.state
        return HistoryBuffer(
            np.asarray(state['_log_history']).tolist(),
            np.asarray(state['_count_history']).tolist(),
            state.get('max_length', 1000000))
    return None
