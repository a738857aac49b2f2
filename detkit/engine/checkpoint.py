"""Checkpoint files: safe loading, atomic saving, plain data, weight loading.

detkit's rule (DESIGN.md, "Checkpoints"): a checkpoint holds only tensors
and plain Python data, so ``torch.load(weights_only=True)`` reads it; a file
from elsewhere goes through a restricted unpickler that never calls what the
file names; and a write never leaves a truncated file under the final name.

- :func:`load_checkpoint_file` reads any checkpoint file safely.
- :func:`save_checkpoint_file` writes one atomically (temp file in the same
  directory, fsync, rename).
- :func:`load_checkpoint` / :func:`load_state_dict` put weights into a
  model and report missing, unexpected and shape-mismatched keys by name.
"""
import collections
import contextlib
import errno
import logging
import os
import os.path as osp
import pickle
import re
import shutil
import uuid
import warnings

import torch
from mmengine.logging import print_log
from mmengine.runner.checkpoint import CheckpointLoader

from .plain_data import to_plain
from .safe_unpickler import RestrictedPickleModule, neutralised_weights


class NeutralisedObjectsWarning(UserWarning):
    """A checkpoint held objects that were replaced by inert placeholders."""


def load_checkpoint_file(path, map_location='cpu'):
    """Load a checkpoint file without ever running code from it.

    Tries ``torch.load(weights_only=True)``; when torch refuses (files from
    mmdetection's model zoo carry mmengine objects such as
    ``HistoryBuffer``), reloads through
    :class:`~detkit.engine.safe_unpickler.RestrictedPickleModule`, which
    rebuilds tensors and plain containers and replaces every other object by
    an inert placeholder, and warns once naming what was replaced.

    Args:
        path (str): local checkpoint path.
        map_location: as for :func:`torch.load`.

    Returns:
        dict: the checkpoint (or bare state_dict) as stored.
    """
    path = osp.expanduser(str(path))
    if not osp.isfile(path):
        raise FileNotFoundError(
            f'Checkpoint file {path!r} does not exist. Check the path given '
            'as load_from, --resume, the CHECKPOINT argument or an '
            'init_cfg checkpoint.')
    try:
        with _naming_corrupt_file(path):
            return torch.load(path, map_location=map_location,
                              weights_only=True)
    except pickle.UnpicklingError:
        pass  # holds non-plain objects: fall through to the restricted load
    module = RestrictedPickleModule()
    with _naming_corrupt_file(path, pickle.UnpicklingError):
        checkpoint = torch.load(
            path, map_location=map_location, weights_only=False,
            pickle_module=module)
    if module.neutralised:
        weights = neutralised_weights(checkpoint)
        effect = ('Weights and plain metadata are unaffected.' if not weights
                  else 'These weights are placeholders, not tensors, and are '
                  'NOT loaded (they keep the model\'s initial values): '
                  + ', '.join(f'{key} ({name})' for key, name in weights)
                  + '; the other weights and plain metadata are unaffected. '
                  'Get the checkpoint again from where it came from.')
        warnings.warn(
            f'Checkpoint {path} holds objects that are not tensors or plain '
            'data; they were replaced by inert placeholders and never run: '
            f'{", ".join(sorted(module.neutralised))}. {effect}',
            NeutralisedObjectsWarning,
            stacklevel=2)
    return checkpoint


class CheckpointCorruptError(RuntimeError):
    """A checkpoint file is truncated or otherwise unreadable."""


class DiskFullError(OSError):
    """A write ran out of space (errno ENOSPC or EDQUOT); the message names
    the file and the free space."""


# What torch.load raises on a truncated or damaged file: an empty file
# (EOFError), a zip without its central directory (PytorchStreamReader), a
# legacy file cut short ("unexpected EOF"), a record beyond the end of the
# file (EINVAL).
_CORRUPT_MESSAGES = ('PytorchStreamReader', 'unexpected EOF', 'corrupt',
                     'truncated')


@contextlib.contextmanager
def _naming_corrupt_file(path, *more_types):
    """Turn torch's errors for a damaged file into one that names it."""
    try:
        yield
    except (RuntimeError, EOFError, OSError, *more_types) as err:
        text = str(err)
        damaged = (isinstance(err, (EOFError, *more_types))
                   or getattr(err, 'errno', None) == errno.EINVAL
                   or any(word in text for word in _CORRUPT_MESSAGES))
        if not damaged:
            raise
        # torch's first sentence ("... failed finding central directory")
        said = text.strip().split('\n')[0].split('. ')[0]
        said = f'{type(err).__name__}: {said}' if said else \
            type(err).__name__
        raise CheckpointCorruptError(
            f'{path} is truncated or corrupt ({os.stat(path).st_size} bytes'
            f'; torch says {said}): a write that did not finish, or an '
            'incomplete copy or download. '
            f'{_other_checkpoints_hint(path)}') from None


def _other_checkpoints_hint(path):
    directory = osp.dirname(osp.abspath(path))
    try:
        others = [osp.join(directory, name) for name in os.listdir(directory)
                  if name.endswith('.pth') and name != osp.basename(path)]
    except OSError:
        others = []
    others.sort(key=lambda p: os.stat(p).st_mtime, reverse=True)
    if not others:
        return 'Copy or download it again.'
    return ('Use the previous checkpoint (newest first: '
            f'{", ".join(others[:3])}), or copy or download this one again.')


def _raise_if_disk_full(err, path):
    """Re-raise ``err`` as one :class:`DiskFullError` line when it, or an
    error it was chained from (torch's writer wraps the OSError in a
    RuntimeError), is "No space left on device" / "Disk quota exceeded"."""
    seen = err
    while seen is not None:
        if getattr(seen, 'errno', None) in (errno.ENOSPC, errno.EDQUOT) or \
                'No space left on device' in str(seen):
            break
        seen = seen.__cause__ or seen.__context__
    else:
        return
    directory = osp.dirname(path)
    try:
        free = f'{shutil.disk_usage(directory).free / 2**20:.1f} MiB free'
    except OSError:
        free = 'free space unknown'
    raise DiskFullError(
        errno.ENOSPC,
        f'No space left on device while writing {path} ({free} on that '
        'file system). Nothing was replaced: the previous checkpoint and '
        'last_checkpoint are as they were. Free some space (fewer kept '
        'checkpoints: default_hooks.checkpoint.max_keep_ckpts) or use '
        'another --work-dir, then continue with --resume.') from None


def atomic_write(path, write):
    """Write a file so that ``path`` is either its old or its complete new
    content, never a truncated one.

    ``write(f)`` fills a temporary file in the same directory (same file
    system, so the rename is atomic); it is flushed, fsynced and renamed over
    ``path``, and the directory entry is fsynced. On an error the temporary
    file is removed and the error re-raised.
    """
    path = osp.abspath(path)
    directory = osp.dirname(path)
    os.makedirs(directory, exist_ok=True)
    tmp = osp.join(directory,
                   f'.{osp.basename(path)}.{uuid.uuid4().hex[:8]}.tmp')
    # O_EXCL: never write into someone else's file; mode 0o666 lets the
    # umask give the file the permissions a plain open() would.
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
    try:
        with os.fdopen(fd, 'wb') as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException as err:
        if osp.exists(tmp):
            os.remove(tmp)
        _raise_if_disk_full(err, path)
        raise
    try:  # make the rename itself durable; not possible on every OS
        dir_fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(dir_fd)
    except OSError:
        pass
    finally:
        os.close(dir_fd)


# What atomic_write names its temporary files: .<name>.<8 hex digits>.tmp
_TEMPORARY = re.compile(r'^\.(?P<name>.+)\.[0-9a-f]{8}\.tmp$')


def remove_stale_temporaries(directory, logger=None):
    """Delete the temporary files that writes by :func:`atomic_write` in
    ``directory`` left behind (a process killed mid-write), saying so in
    one line. Call it only while no other process writes there (a
    training holding the work_dir's lock).

    Returns:
        list[str]: the removed paths.
    """
    try:
        names = sorted(os.listdir(directory))
    except OSError:
        return []
    removed, described = [], []
    for name in names:
        match = _TEMPORARY.match(name)
        path = osp.join(directory, name)
        if match is None or not osp.isfile(path):
            continue
        size = os.stat(path).st_size
        try:
            os.remove(path)
        except OSError:
            continue
        removed.append(path)
        described.append(f'{name} ({size} bytes, an unfinished write of '
                         f'{match.group("name")})')
    if removed:
        print_log(
            f'Removed {len(removed)} temporary file(s) in {directory} left '
            f'by an interrupted checkpoint write: {"; ".join(described)}.',
            logger=logger or 'current',
            level=logging.WARNING)
    return removed


def save_checkpoint_file(checkpoint, path):
    """Save ``checkpoint`` to the local ``path`` atomically, as plain data.

    Anything :func:`to_plain` cannot represent is dropped with a warning
    naming where it was, so the file always loads with ``weights_only``.
    """
    dropped = []
    checkpoint = to_plain(checkpoint, 'checkpoint', dropped)
    if dropped:
        print_log(
            f'Saving {path}: dropped values that are not plain data: '
            f'{"; ".join(dropped)}',
            logger='current',
            level=logging.WARNING)
    atomic_write(path, lambda f: torch.save(checkpoint, f))


def _get_state_dict(checkpoint, filename):
    if not isinstance(checkpoint, dict):
        raise RuntimeError(
            f'{filename} holds a {type(checkpoint).__name__}, not a '
            'checkpoint dict or a state_dict, so it has no weights to load. '
            'Pass a checkpoint written by tools/train.py (or an '
            'mmdetection .pth).')
    state_dict = checkpoint.get('state_dict', checkpoint)
    if not isinstance(state_dict, dict):
        raise RuntimeError(f"{filename}: 'state_dict' is a "
                           f'{type(state_dict).__name__}, not a dict of '
                           'weights; the file is not a model checkpoint.')
    return state_dict


class LoadReport(
        collections.namedtuple(
            'LoadReport',
            ['missing', 'unexpected', 'mismatched', 'not_tensors', 'loaded',
             'total'],
            defaults=((), 0, 0))):
    """Keys that did not load: ``missing`` and ``unexpected`` are lists of
    names, ``mismatched`` a list of ``(name, checkpoint_shape,
    model_shape)``, ``not_tensors`` a list of ``(name, what)`` for values
    that are not tensors (e.g. a placeholder for an object the safe loader
    refused). ``loaded`` of the model's ``total`` state_dict entries were
    filled from the checkpoint."""

    def __bool__(self):
        return bool(self.missing or self.unexpected or self.mismatched
                    or self.not_tensors)

    @property
    def fraction(self):
        """Share of the model's state_dict entries that were loaded."""
        return self.loaded / self.total if self.total else 1.0

    def summary(self):
        return (f'loaded {self.loaded} of the model\'s {self.total} weight '
                f'tensors, {100 * self.fraction:.1f}%')

    def __str__(self):
        lines = []
        if self.missing:
            lines.append('missing keys in the checkpoint (left as '
                         f'initialised): {", ".join(self.missing)}')
        if self.unexpected:
            lines.append('unexpected keys in the checkpoint (ignored): '
                         f'{", ".join(self.unexpected)}')
        if self.mismatched:
            shapes = ', '.join(
                f'{name} (checkpoint {tuple(ckpt)}, model {tuple(model)})'
                for name, ckpt, model in self.mismatched)
            lines.append(f'shape mismatches (left as initialised): {shapes}')
        if self.not_tensors:
            values = ', '.join(f'{name} ({what})'
                               for name, what in self.not_tensors)
            lines.append('values that are not tensors (left as '
                         f'initialised): {values}')
        return '\n'.join(lines) or 'all keys matched'


class PartialCheckpointError(RuntimeError):
    """Fewer than half of a model's weights were found in a checkpoint."""


def _examples(names, n=3):
    names = list(names)
    if not names:
        return 'none'
    more = f' (+{len(names) - n} more)' if len(names) > n else ''
    return ', '.join(names[:n]) + more


def check_loaded_fraction(report, source, model_name='the model'):
    """Raise :class:`PartialCheckpointError` when ``report`` (a
    :class:`LoadReport`) says fewer than half of the model's weights come
    from the checkpoint ``source``: predicting with mostly random weights
    is never what a user of ``init_detector`` or ``tools/test.py`` wants.
    """
    if not report.total or 2 * report.loaded >= report.total:
        return
    mismatched = (f'; {len(report.mismatched)} shape mismatches, e.g. '
                  + _examples(f'{n} (checkpoint {tuple(c)}, model '
                              f'{tuple(m)})' for n, c, m in report.mismatched)
                  if report.mismatched else '')
    raise PartialCheckpointError(
        f'{source}: only {report.loaded} of the {report.total} weight tensors '
        f'of {model_name} are in this checkpoint '
        f'({100 * report.fraction:.1f}%, fewer than half); the rest would '
        'keep random initial values. Model keys not in the checkpoint: '
        f'{_examples(report.missing)}; checkpoint keys the model does not '
        f'have: {_examples(report.unexpected)}{mismatched}. Is this a '
        'checkpoint of another model or config? To use it anyway, pass '
        'allow_partial=True (init_detector, DetInferencer) or '
        '--allow-partial-checkpoint (tools/test.py, demo/image_demo.py).')


def _match_state_dict(module, state_dict):
    """``(matched, report)``: the entries of ``state_dict`` that fit
    ``module`` (name, shape, a tensor), and a :class:`LoadReport`."""
    # Models that rename legacy keys (RPN: rpn_head.* <-> bbox_head.*) do it
    # before keys are matched, as their _load_from_state_dict would.
    if hasattr(module, 'revise_state_dict'):
        state_dict = module.revise_state_dict(state_dict)
    own = module.state_dict()
    matched = collections.OrderedDict()
    mismatched, unexpected, not_tensors = [], [], []
    for name, value in state_dict.items():
        if name not in own:
            unexpected.append(name)
        elif isinstance(own[name], torch.Tensor) and not isinstance(
                value, torch.Tensor):
            not_tensors.append((name, repr(value) if getattr(
                value, 'neutralised_global', None) else
                                type(value).__name__))
        elif (isinstance(value, torch.Tensor)
              and value.shape != own[name].shape):
            mismatched.append((name, tuple(value.shape),
                               tuple(own[name].shape)))
        else:
            matched[name] = value
    missing = [name for name in own if name not in state_dict]
    metadata = getattr(state_dict, '_metadata', None)
    if metadata is not None:
        matched._metadata = metadata
    return matched, LoadReport(missing, unexpected, mismatched, not_tensors,
                               len(matched), len(own))


def load_state_dict(module, state_dict, strict=False, logger=None,
                    allow_partial=True, source='checkpoint'):
    """Load ``state_dict`` into ``module`` (unwrapped from DDP), keeping
    what matches.

    Unlike ``nn.Module.load_state_dict`` a shape mismatch does not abort
    the load: the tensor is skipped and reported with both shapes. With
    ``strict=True`` any missing, unexpected or mismatched key raises a
    RuntimeError listing all of them, and the module is left untouched.
    With ``allow_partial=False``, fewer than half of the module's entries
    found in ``state_dict`` raise :class:`PartialCheckpointError` (see
    :func:`check_loaded_fraction`), also leaving the module untouched.
    Otherwise what did not load is logged after one line with the loaded
    fraction.

    Returns:
        LoadReport: what did not load.
    """
    module = getattr(module, 'module', module)
    matched, report = _match_state_dict(module, state_dict)
    if strict and report:
        raise RuntimeError(
            f'Error loading a state_dict into {type(module).__name__} '
            f'(strict=True):\n{report}')
    if not allow_partial:
        check_loaded_fraction(report, source, type(module).__name__)
    module.load_state_dict(matched, strict=False)
    if report:
        print_log(f'While loading a state_dict into {type(module).__name__}'
                  f': {report.summary()}\n{report}',
                  logger=logger or 'current', level=logging.WARNING)
    return report


def load_checkpoint(model,
                    filename,
                    map_location='cpu',
                    strict=False,
                    logger=None,
                    revise_keys=[(r'^module\.', '')],
                    allow_partial=True):
    """Load weights from ``filename`` into ``model``.

    ``filename`` is a local path or any scheme mmengine's CheckpointLoader
    knows (``https://``, ``torchvision://``, ``open-mmlab://``...); detkit
    registers safe loaders for those (see :mod:`.checkpoint_loaders`). The
    file may be a full checkpoint (``{'state_dict': ..., 'meta': ...}``) or
    a bare state_dict. See :func:`load_model_weights` for the rest.

    Returns:
        dict: the loaded checkpoint.
    """
    checkpoint = CheckpointLoader.load_checkpoint(
        filename, map_location, logger=logger or 'current')
    load_model_weights(model, checkpoint, strict=strict, logger=logger,
                       revise_keys=revise_keys, source=filename,
                       allow_partial=allow_partial)
    return checkpoint


def load_model_weights(model,
                       checkpoint,
                       strict=False,
                       logger=None,
                       revise_keys=[(r'^module\.', '')],
                       source='checkpoint',
                       allow_partial=True):
    """Put a loaded checkpoint's weights into ``model``.

    ``checkpoint`` is a full checkpoint (weights under ``'state_dict'``) or a
    bare state_dict. ``revise_keys`` is a list of ``(pattern, replacement)``
    regular expressions applied to every key (by default DDP's ``module.``
    prefix is stripped). Mismatches are reported as by
    :func:`load_state_dict`; ``strict=True`` raises on any,
    ``allow_partial=False`` when fewer than half of the weights fit.

    Returns:
        LoadReport: what did not load.
    """
    return load_state_dict(model, _revised_state_dict(checkpoint, source,
                                                      revise_keys),
                           strict=strict, logger=logger,
                           allow_partial=allow_partial, source=source)


def weights_report(model, checkpoint, revise_keys=[(r'^module\.', '')],
                   source='checkpoint'):
    """The :class:`LoadReport` that :func:`load_model_weights` would give,
    without loading anything."""
    module = getattr(model, 'module', model)
    return _match_state_dict(
        module, _revised_state_dict(checkpoint, source, revise_keys))[1]


def _revised_state_dict(checkpoint, source, revise_keys):
    state_dict = _get_state_dict(checkpoint, source)
    revised = _revise(state_dict, revise_keys)
    metadata = getattr(state_dict, '_metadata', None)
    if metadata is not None:
        # Module versions are keyed by the same prefixes as the weights.
        revised._metadata = _revise(metadata, revise_keys)
    return revised


def _revise(mapping, revise_keys):
    revised = collections.OrderedDict()
    for key, value in mapping.items():
        for pattern, replacement in revise_keys:
            key = re.sub(pattern, replacement, key)
        revised[key] = value
    return revised
