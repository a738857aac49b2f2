"""Which checkpoint ``--resume`` continues from, and whether it can.

:func:`find_resume_checkpoint` is ``--resume`` without a path. mmengine
reads ``<work_dir>/last_checkpoint`` and, without one, logs "resumed from
None" and trains from scratch. detkit also covers the ways a run can stop
between its files:

- a checkpoint of the usual names (``epoch_N.pth``, ``iter_N.pth``,
  ``interrupted_iter_N.pth``) written *after* ``last_checkpoint`` was last
  updated belongs to a run killed between writing the checkpoint and moving
  the pointer: it is the newer state, and is used (with a warning);
- a pointer to a file that is not there, while the work_dir holds a file of
  that name (the work_dir was moved or copied): that file is used;
- nothing at all: one warning that training starts from scratch.

:func:`check_resumable` refuses a weights-only file (a published model, a
converted zoo file: no ``meta['epoch']`` / ``meta['iter']``) with what to do
instead (``load_from``), where mmengine raised ``KeyError: 'epoch'``.
"""
import os
import os.path as osp
import re

# The names CheckpointHook and the interrupt hook give checkpoints.
CHECKPOINT_NAME = re.compile(r'^(epoch|iter|interrupted_iter)_\d+\.pth$')


def find_resume_checkpoint(work_dir, logger):
    """The checkpoint to resume ``work_dir``'s training from (see the
    module docstring), or None to start from scratch (said in a warning).
    """
    pointer = osp.join(work_dir, 'last_checkpoint')
    named = None
    if osp.isfile(pointer):
        with open(pointer) as f:
            named = f.read().strip() or None
    if named is not None and not osp.isfile(named):
        moved = osp.join(work_dir, osp.basename(named))
        if not osp.isfile(moved):
            raise FileNotFoundError(
                f'{pointer} names {named}, which does not exist (nor does '
                f'{moved}). Pass the checkpoint to continue from with '
                '--resume PATH, or delete last_checkpoint to start from '
                'scratch.')
        logger.warning(f'{pointer} names {named}, which does not exist; '
                       f'using {moved} (the work_dir was moved?).')
        named = moved
    newer = _newest_checkpoint(work_dir,
                               after=os.stat(pointer).st_mtime_ns
                               if named else None)
    if newer and named:
        logger.warning(
            f'{newer} was written after {named}, the checkpoint {pointer} '
            f'names (the run stopped before updating it): resuming from '
            f'{newer}.')
        return newer
    if newer:
        logger.warning(f'No last_checkpoint in {work_dir}, but {newer} is '
                       'there: resuming from it.')
        return newer
    if named is None:
        logger.warning(
            f'--resume: no checkpoint to resume from in {work_dir} (no '
            'last_checkpoint file and no epoch_N.pth / iter_N.pth): '
            'training starts from scratch.')
    return named


def _newest_checkpoint(work_dir, after=None):
    """The newest checkpoint of the usual names in ``work_dir`` modified
    after ``after`` (ns since the epoch; None: any)."""
    newest, newest_time = None, -1 if after is None else after
    for name in os.listdir(work_dir):
        if not CHECKPOINT_NAME.match(name):
            continue
        path = osp.join(work_dir, name)
        mtime = os.stat(path).st_mtime_ns
        if mtime > newest_time:
            newest, newest_time = path, mtime
    return newest


def check_resumable(checkpoint, filename):
    """A file to resume from must be a training checkpoint: weights plus
    ``meta`` with ``epoch`` and ``iter`` (what mmengine's resume reads)."""
    meta = checkpoint.get('meta')
    missing = [key for key in ('epoch', 'iter')
               if not isinstance(meta, dict) or key not in meta]
    if not missing:
        return
    what = ('has no meta' if not isinstance(meta, dict) else
            f'has no {" or ".join(repr(k) for k in missing)} in its meta')
    raise RuntimeError(
        f'Cannot resume from {filename}: it {what}, so it is a weights-only '
        'file (a published or converted model), not a training checkpoint. '
        'To start a new training from its weights, use load_from '
        f'(--cfg-options load_from={filename}) without --resume; to '
        'continue a training, resume from one of its epoch_N.pth / '
        'iter_N.pth checkpoints.')
