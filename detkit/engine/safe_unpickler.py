"""A restricted unpickler for checkpoints that ``weights_only`` refuses.

Checkpoints from mmdetection's model zoo carry mmengine objects (the message
hub's ``HistoryBuffer``, sometimes ``ConfigDict`` or numpy scalars) beside
their tensors, and ``torch.load(weights_only=True)`` refuses the whole file.
Loading them with plain pickle would run whatever the file names, so this
module gives ``torch.load`` a ``pickle_module`` whose unpickler:

- resolves a short, fixed table of names (tensor and storage rebuilding,
  ``OrderedDict``, ``Counter``, torch dtypes/devices/sizes, numpy arrays and
  scalars, ``set``/``frozenset``/``complex``/``bytearray``/``slice``),
  never importing anything by name;
- turns every other global into an inert :class:`NeutralisedObject` subclass.
  Calling it, ``__new__``-ing it, ``__setstate__``, ``append`` and item
  assignment only record their arguments, so a ``__reduce__`` that names
  ``os.system``, ``subprocess.Popen`` or ``builtins.eval`` yields a
  placeholder instead of running.

Usage: ``torch.load(path, weights_only=False,
pickle_module=RestrictedPickleModule())`` and afterwards read the module's
``neutralised`` set for the names that were replaced.
"""
import _compat_pickle
import collections
import pickle

import numpy as np
import torch



def _numpy_globals():
    """Names numpy's pickles use for arrays, dtypes and scalars (numpy 1.x
    spells the module ``numpy.core``, numpy 2.x ``numpy._core``)."""
    try:
        from numpy._core import multiarray
    except ImportError:  # numpy < 2
        from numpy.core import multiarray
    table = {'numpy.ndarray': np.ndarray, 'numpy.dtype': np.dtype}
    for module in ('numpy.core.multiarray', 'numpy._core.multiarray'):
        table[f'{module}._reconstruct'] = multiarray._reconstruct
        table[f'{module}.scalar'] = multiarray.scalar
    return table


def _torch_globals():
    """What ``torch.load(weights_only=True)`` itself accepts: tensor and
    storage rebuild functions, dtypes, devices, ``OrderedDict``...

    The table is torch's own (private, so guarded); a minimal copy is used
    when a future torch drops it.
    """
    table = {
        'collections.OrderedDict': collections.OrderedDict,
        'collections.Counter': collections.Counter,
        'torch.Size': torch.Size,
        'torch.device': torch.device,
        'torch.nn.parameter.Parameter': torch.nn.Parameter,
        'torch._utils._rebuild_tensor_v2': torch._utils._rebuild_tensor_v2,
        'torch._utils._rebuild_parameter': torch._utils._rebuild_parameter,
    }
    for dtype in (torch.float16, torch.bfloat16, torch.float32,
                  torch.float64, torch.uint8, torch.int8, torch.int16,
                  torch.int32, torch.int64, torch.bool):
        table[str(dtype)] = dtype
    try:
        from torch._weights_only_unpickler import _get_allowed_globals
        table.update(_get_allowed_globals())
    except (ImportError, AttributeError):
        pass
    return table


def _allowed_globals():
    table = _torch_globals()
    table.update(_numpy_globals())
    table.update({
        'builtins.set': set,
        'builtins.frozenset': frozenset,
        'builtins.complex': complex,
        'builtins.bytearray': bytearray,
        'builtins.slice': slice,
    })
    return table


_ALLOWED = None


def allowed_globals():
    """``{'module.name': object}`` the restricted unpickler resolves."""
    global _ALLOWED
    if _ALLOWED is None:
        _ALLOWED = _allowed_globals()
    return _ALLOWED


class NeutralisedObject:
    """Inert stand-in for a global that the restricted unpickler refused.

    Each refused name gets its own subclass whose ``neutralised_global``
    says what the file asked for (``'mmengine.logging.history_buffer.
    HistoryBuffer'``). Whatever pickle does with it is recorded, never
    acted on: ``args``/``kwargs`` (from a call of the class or of an
    instance, or from ``__new__``), ``state`` (from ``__setstate__``),
    ``items`` (``append``/``extend``) and ``mapping`` (item assignment).
    """

    neutralised_global = ''

    def __new__(cls, *args, **kwargs):
        obj = object.__new__(cls)
        obj.args, obj.kwargs = args, kwargs
        obj.state, obj.items, obj.mapping = None, [], {}
        return obj

    def __init__(self, *args, **kwargs):
        # Arguments were already recorded by __new__; nothing is called.
        pass

    def __call__(self, *args, **kwargs):
        # ``getattr(os, 'system')('...')`` pickles as a call of a call: the
        # outer call gets another inert instance instead of a TypeError, so
        # such a file still loads.
        return type(self)(*args, **kwargs)

    def __setstate__(self, state):
        self.state = state

    def append(self, item):
        self.items.append(item)

    def extend(self, items):
        self.items.extend(items)

    def __setitem__(self, key, value):
        self.mapping[key] = value

    def __repr__(self):
        return f'<neutralised {self.neutralised_global}>'


class RestrictedPickleModule:
    """A ``pickle_module`` for ``torch.load``, one per load.

    ``neutralised`` collects the names of the globals that were replaced
    by placeholders during the load.
    """

    __name__ = 'detkit.restricted_pickle'

    def __init__(self):
        self.neutralised = set()
        self._placeholders = {}
        module = self

        class Unpickler(pickle.Unpickler):

            def find_class(self, mod_name, name):
                return module.resolve(mod_name, name)

        self.Unpickler = Unpickler
        self.UnpicklingError = pickle.UnpicklingError

    def load(self, file, **kwargs):
        """``pickle.load`` through the restricted unpickler (torch's legacy
        format reads its header records with this)."""
        return self.Unpickler(file, **kwargs).load()

    def resolve(self, mod_name, name):
        """The allowed object for ``mod_name.name``, else a placeholder."""
        mod_name, name = _python3_name(mod_name, name)
        qualname = f'{mod_name}.{name}'
        allowed = allowed_globals()
        if qualname in allowed:
            return allowed[qualname]
        self.neutralised.add(qualname)
        if qualname not in self._placeholders:
            self._placeholders[qualname] = type(
                f'Neutralised_{name}', (NeutralisedObject, ),
                dict(neutralised_global=qualname))
        return self._placeholders[qualname]


def neutralised_weights(checkpoint):
    """``[(key, refused global)]`` for each weight of ``checkpoint`` (its
    ``'state_dict'``, or the checkpoint itself when it is a bare state_dict)
    that is a placeholder instead of a tensor; ``('state_dict', ...)`` when
    the whole state_dict is one."""
    if not isinstance(checkpoint, dict):
        return []
    state_dict = checkpoint.get('state_dict', checkpoint)
    if isinstance(state_dict, NeutralisedObject):
        return [('state_dict', state_dict.neutralised_global)]
    if not isinstance(state_dict, dict):
        return []
    return [(key, value.neutralised_global)
            for key, value in state_dict.items()
            if isinstance(value, NeutralisedObject)]


def _python3_name(mod_name, name):
    """Protocol 0-2 pickles (torch.save's default is 2) name globals the
    Python 2 way (``__builtin__.set``, ``commands.call``); map them to the
    Python 3 names, as pickle's own ``find_class`` does."""
    if (mod_name, name) in _compat_pickle.NAME_MAPPING:
        return _compat_pickle.NAME_MAPPING[(mod_name, name)]
    return _compat_pickle.IMPORT_MAPPING.get(mod_name, mod_name), name
