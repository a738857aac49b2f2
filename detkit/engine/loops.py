"""Training loops that resume exactly at any iteration.

mmengine's ``EpochBasedTrainLoop`` resumed from a checkpoint saved inside an
epoch (an ``interrupted_iter_N.pth``, or a ``CheckpointHook`` with
``by_epoch=False``) trains that epoch again from its first batch, and one
resumed at the end of an epoch skips the validation the interrupted run may
not have finished. :class:`DetEpochBasedTrainLoop`, which
:class:`~detkit.engine.runner.DetRunner` uses wherever a config asks for
mmengine's (``train_cfg=dict(by_epoch=True, ...)`` or
``type='EpochBasedTrainLoop'``), differs in three points:

- **mid-epoch resume**: the batches of the current epoch that the
  checkpoint already trained (``iter - epoch * len(dataloader)``) are
  skipped at the batch sampler, without loading their images (see
  :class:`~detkit.engine.seeded_data.ResumableBatchSampler`), and the
  rest keep their in-epoch index, so logging intervals and the log
  history continue as in the uninterrupted run;
- **validation owed at resume**: resumed at the end of an epoch whose
  validation is due but had not run when the checkpoint was saved (the
  epoch's checkpoint is written before its validation), it validates
  first. The loop records ``validated_epoch`` in the message hub just
  before each validation, so later checkpoints say it ran;
- **per-iteration seeds**: before each iteration the main process's RNGs
  are seeded from ``(seed, rank, iteration)`` when the data is seeded
  (:mod:`.seeded_data`), so randomness in the model (a RoI sampler, drop
  out) does not depend on where the run was resumed.

:class:`DetIterBasedTrainLoop` adds the per-iteration seeds to mmengine's
``IterBasedTrainLoop`` (whose resume already replays the data stream).

:func:`resumable_loop_cfg` makes the replacement in ``train_cfg`` and
refuses keys the loop does not take, naming the closest ones
(``max_epoch`` -> ``max_epochs``): mmengine would fail with a bare
``TypeError`` from the loop's constructor.
"""
import difflib
import inspect
import logging

from mmengine.logging import print_log
from mmengine.runner import EpochBasedTrainLoop, IterBasedTrainLoop

from detkit.registry import LOOPS
from .seeded_data import ResumableBatchSampler, iteration_seed, seed_rngs


def _seed_iteration(dataloader, iteration):
    seed = iteration_seed(dataloader, iteration)
    if seed is not None:
        seed_rngs(seed, all_devices=True)


@LOOPS.register_module()
class DetEpochBasedTrainLoop(EpochBasedTrainLoop):
    """mmengine's ``EpochBasedTrainLoop`` (same arguments) with exact
    mid-epoch resume; see the module docstring."""

    def run(self):
        self.runner.call_hook('before_train')
        if self._validation_owed():
            print_log(
                f'Resumed at the end of epoch {self._epoch}, whose '
                'validation had not run when the checkpoint was saved: '
                'validating first.', logger='current',
                level=logging.WARNING)
            self._validate()
        while self._epoch < self._max_epochs and not self.stop_training:
            self.run_epoch()
            self._decide_current_val_interval()
            if self._validation_due():
                self._validate()
        self.runner.call_hook('after_train')
        return self.runner.model

    def run_epoch(self):
        self.runner.call_hook('before_train_epoch')
        self.runner.model.train()
        done = self._done_in_epoch()
        for idx, data_batch in enumerate(self._batches(done), start=done):
            self.run_iter(idx, data_batch)
        self.runner.call_hook('after_train_epoch')
        self._epoch += 1

    def run_iter(self, idx, data_batch):
        _seed_iteration(self.dataloader, self._iter)
        super().run_iter(idx, data_batch)

    def _done_in_epoch(self):
        """Batches of the current epoch trained before a resume (0 unless
        the run resumed from a checkpoint saved inside this epoch)."""
        per_epoch = len(self.dataloader)
        done = self._iter - self._epoch * per_epoch
        if 0 <= done <= per_epoch:
            return done
        print_log(
            f'The resumed checkpoint has iter={self._iter} at '
            f'epoch={self._epoch}, which does not fit {per_epoch} batches '
            'per epoch (was the batch size or the dataset changed?): '
            'training this epoch from its first batch.',
            logger='current', level=logging.WARNING)
        return 0

    def _batches(self, skip):
        """The epoch's batches after the first ``skip``."""
        if skip == 0:
            return self.dataloader
        batch_sampler = getattr(self.dataloader, 'batch_sampler', None)
        if isinstance(batch_sampler, ResumableBatchSampler):
            batch_sampler.skip_next_epoch(skip)
            return self.dataloader
        # A dataloader built by the caller: load and drop the batches.
        batches = iter(self.dataloader)
        for _ in range(skip):
            next(batches)
        return batches

    def _validation_due(self):
        return (self.runner.val_loop is not None
                and self._epoch >= self.val_begin
                and (self._epoch % self.val_interval == 0
                     or self._epoch == self._max_epochs))

    def _validation_owed(self):
        if self._epoch == 0 or self._iter != self._epoch * len(
                self.dataloader):
            return False
        self._decide_current_val_interval()  # as after epoch _epoch
        validated = self.runner.message_hub.get_info('validated_epoch')
        return self._validation_due() and validated != self._epoch

    def _validate(self):
        self.runner.message_hub.update_info('validated_epoch', self._epoch)
        self.runner.val_loop.run()


@LOOPS.register_module()
class DetIterBasedTrainLoop(IterBasedTrainLoop):
    """mmengine's ``IterBasedTrainLoop`` (same arguments) with the main
    process seeded per iteration; see the module docstring."""

    def run_iter(self, data_batch):
        _seed_iteration(self.dataloader, self._iter)
        super().run_iter(data_batch)


# mmengine's loops, by name and class, and their exact-resume versions.
LOOP_REPLACEMENTS = {
    'EpochBasedTrainLoop': DetEpochBasedTrainLoop,
    EpochBasedTrainLoop: DetEpochBasedTrainLoop,
    'IterBasedTrainLoop': DetIterBasedTrainLoop,
    IterBasedTrainLoop: DetIterBasedTrainLoop,
}


def resumable_loop_cfg(loop_cfg):
    """``train_cfg`` with mmengine's epoch/iteration loops replaced by
    detkit's exact-resume ones, and its keys checked against the loop's
    arguments (``max_epoch`` -> "did you mean 'max_epochs'?")."""
    cfg = dict(loop_cfg)
    if 'type' not in cfg:
        if 'by_epoch' not in cfg:
            raise KeyError(
                f'train_cfg {cfg} needs by_epoch=True (epochs), '
                "by_epoch=False (iterations) or a loop type, e.g. "
                "dict(type='EpochBasedTrainLoop', max_epochs=12).")
        cfg['type'] = (DetEpochBasedTrainLoop
                       if cfg.pop('by_epoch') else DetIterBasedTrainLoop)
    elif 'by_epoch' in cfg:
        raise KeyError('train_cfg has both type and by_epoch: keep one '
                       '(by_epoch=True means EpochBasedTrainLoop).')
    loop_type = cfg['type']
    if isinstance(loop_type, str) or inspect.isclass(loop_type):
        cfg['type'] = LOOP_REPLACEMENTS.get(loop_type, loop_type)
    if inspect.isclass(cfg['type']):
        _check_loop_keys(cfg)
    return cfg


def _check_loop_keys(cfg):
    params = inspect.signature(cfg['type'].__init__).parameters
    if any(p.kind == p.VAR_KEYWORD for p in params.values()):
        return
    accepted = [name for name in params
                if name not in ('self', 'runner', 'dataloader')]
    for key in cfg:
        if key == 'type' or key in accepted:
            continue
        close = difflib.get_close_matches(key, accepted, n=3, cutoff=0.6)
        hint = (f'Did you mean {", ".join(repr(c) for c in close)}?'
                if close else f'It takes: {", ".join(accepted)}.')
        name = cfg['type'].__name__.replace('Det', '', 1)
        raise TypeError(f'train_cfg has an unknown key {key!r} for '
                        f'{name}. {hint}')
