"""DetRunner: mmengine's Runner with safe, plain, atomic checkpoints and
CPU distributed training.

What changes against ``mmengine.runner.Runner`` (everything else, including
``from_cfg`` and the config keys, is mmengine's):

- :meth:`save_checkpoint` stores plain data only (the message hub's
  ``HistoryBuffer`` objects as lists, see :mod:`.message_hub_state`), so the
  file loads with ``torch.load(weights_only=True)``, and writes it
  atomically.
- :meth:`load_checkpoint` (used by ``load_from`` and ``resume``) reads files
  through detkit's safe loaders, rebuilds the message hub before mmengine's
  ``resume`` uses it, reduces everything else to plain data (so objects a
  foreign file held never reach the optimizer or schedulers), and reports
  missing / unexpected / shape-mismatched weights by name.
- With ``launcher='pytorch'`` or ``'slurm'`` and no CUDA (or
  ``env_cfg.dist_cfg.backend='gloo'``), the process group is gloo and the
  model is wrapped in DDP with ``device_ids=None`` (see :mod:`.dist`).
- Distributed runs use :class:`~.dist.DetDistributedDataParallel` unless
  the config names a ``model_wrapper_cfg``.
- The training data of each epoch is drawn with seeds derived from
  ``(seed, epoch, rank, position)`` (see :mod:`.seeded_data`), and the
  training loops (:mod:`.loops`) resume inside an epoch and owe no
  validation, so that a run resumed after a crash repeats the
  uninterrupted run exactly. Unknown ``train_cfg`` keys are refused with
  the closest names.
- :meth:`train` takes the work_dir's lock (:mod:`.work_dir_lock`; rank 0),
  removes temporary files an interrupted checkpoint write left, and turns
  Ctrl-C / SIGTERM into a checkpoint and a non-zero exit
  (:mod:`.interrupts`).
- ``resume`` says what it does: no checkpoint found (training starts from
  scratch), a checkpoint written after the one ``last_checkpoint`` names
  (the run died before updating it), a weights-only file (use
  ``load_from``).
"""
import time

import mmengine
from mmengine.device import get_device
from mmengine.dist import (broadcast_object_list, get_world_size,
                           is_distributed, is_main_process, master_only)
from mmengine.fileio import LocalBackend, get_file_backend, join_path
from mmengine.model import is_model_wrapper
from mmengine.optim import OptimWrapper
from mmengine.runner import BaseLoop, Runner
from mmengine.runner.checkpoint import (_load_checkpoint, save_checkpoint,
                                        weights_to_cpu)
from mmengine.utils import apply_to, get_git_hash

from detkit.registry import RUNNERS
from .checkpoint import (load_model_weights, remove_stale_temporaries,
                         save_checkpoint_file)
from .dist import (default_wrapper_cfg, init_gloo_dist, scoped_wrapper_cfg,
                   use_gloo, wrap_ddp_without_device_ids)
from .interrupts import InterruptCheckpointHook
from .loops import resumable_loop_cfg
from .message_hub_state import message_hub_from_plain, message_hub_to_plain
from .plain_data import to_plain
from .resume import check_resumable, find_resume_checkpoint
from .seeded_data import follow_resumed_seed, seed_train_dataloader_cfg
from .speedups import (channels_last_enabled, foreach_optim_wrapper_cfg,
                       set_memory_format)
from .work_dir_lock import WorkDirLock, WorkDirLockedError



def _to_cpu(data):
    return apply_to(data, lambda x: hasattr(x, 'cpu'), lambda x: x.cpu())


@RUNNERS.register_module()
class DetRunner(Runner):
    """mmengine's Runner for detkit; takes exactly the same arguments."""

    def setup_env(self, env_cfg):
        """Initialise gloo ourselves when mmengine's CUDA-only path would
        fail; mmengine's ``setup_env`` then finds the group initialised."""
        self._gloo = self.distributed and use_gloo(self.launcher, env_cfg)
        if self._gloo and not is_distributed():
            dist_cfg = dict(env_cfg.get('dist_cfg', {}))
            dist_cfg.pop('backend', None)
            init_gloo_dist(self.launcher, **dist_cfg)
        super().setup_env(env_cfg)

    def wrap_model(self, model_wrapper_cfg, model):
        """DDP without ``device_ids`` for gloo; mmengine's wrapping
        otherwise. Distributed runs without a ``model_wrapper_cfg`` get
        :class:`~detkit.engine.dist.DetDistributedDataParallel` (losses
        averaged over ranks for logging, non-finite guard on every rank).
        The model is first put in channels-last memory format unless the
        config says ``channels_last=False`` (:mod:`.speedups`)."""
        if not is_model_wrapper(model) and channels_last_enabled(self.cfg):
            set_memory_format(model, channels_last=True)
        if not self.distributed or is_model_wrapper(model):
            return super().wrap_model(model_wrapper_cfg, model)
        find_unused = self.cfg.get('find_unused_parameters', False)
        if model_wrapper_cfg is None:
            model_wrapper_cfg = default_wrapper_cfg(find_unused)
        if not self._gloo:
            return super().wrap_model(scoped_wrapper_cfg(model_wrapper_cfg),
                                      model)
        return wrap_ddp_without_device_ids(
            model.to(get_device()),
            model_wrapper_cfg=model_wrapper_cfg,
            sync_bn=self.cfg.get('sync_bn', None),
            find_unused_parameters=find_unused)

    def _init_model_weights(self):
        """mmengine's, on the model in NCHW: random initialisers fill a
        tensor in memory order, so a channels-last model would otherwise
        start from other weights than the same seed gives in NCHW (and in
        mmdetection)."""
        model = self.model.module if is_model_wrapper(
            self.model) else self.model
        channels_last = channels_last_enabled(self.cfg)
        if channels_last:
            set_memory_format(model, channels_last=False)
        try:
            super()._init_model_weights()
        finally:
            if channels_last:
                set_memory_format(model, channels_last=True)

    def build_optim_wrapper(self, optim_wrapper):
        """mmengine's, with the multi-tensor (``foreach``) step where the
        config leaves it open: bitwise the same update (:mod:`.speedups`).
        """
        return super().build_optim_wrapper(
            foreach_optim_wrapper_cfg(optim_wrapper))

    @staticmethod
    def build_dataloader(dataloader, seed=None, diff_rank_seed=False):
        """mmengine's, with ``pin_memory`` on exactly when CUDA is
        available (unless the config turns it off) and OpenCV
        single-threaded in every worker (:mod:`detkit.datasets.workers`).
        """
        from detkit.datasets.workers import (resolve_pin_memory,
                                             with_worker_init)
        if isinstance(dataloader, dict):
            dataloader = resolve_pin_memory(dataloader)
        return with_worker_init(
            Runner.build_dataloader(dataloader, seed, diff_rank_seed))

    def build_train_loop(self, loop):
        """mmengine's, with the training data drawn from per-sample seeds
        (:mod:`.seeded_data`): a resumed run sees the same augmentations
        as the uninterrupted one."""
        self._train_dataloader = seed_train_dataloader_cfg(
            self._train_dataloader)
        if isinstance(loop, dict):
            loop = resumable_loop_cfg(loop)
        return super().build_train_loop(loop)

    def train(self):
        """mmengine's, inside the work_dir's lock, with stale temporary
        checkpoint files removed and Ctrl-C / SIGTERM handled (see the
        module docstring)."""
        lock = self._lock_work_dir()
        interrupts = next((hook for hook in self._hooks
                           if isinstance(hook, InterruptCheckpointHook)),
                          None)
        if interrupts is None:
            interrupts = InterruptCheckpointHook()
            self.register_hook(interrupts)
        try:
            if is_main_process():
                remove_stale_temporaries(self.work_dir, self.logger)
            return super().train()
        finally:
            # The caller's signal handlers are back however training ended
            # (after_train does not run when it raised).
            interrupts.recorder.uninstall()
            if lock is not None:
                lock.release()

    def _lock_work_dir(self):
        """Rank 0 takes the lock; every rank raises if it could not (the
        others would otherwise wait for rank 0 in the first collective)."""
        lock, refusal = None, None
        if is_main_process():
            lock = WorkDirLock(self.work_dir, log=self.logger.warning)
            try:
                lock.acquire()
            except WorkDirLockedError as err:
                lock, refusal = None, str(err)
        if get_world_size() > 1:
            shared = [refusal]
            broadcast_object_list(shared)
            refusal = shared[0]
        if refusal is not None:
            raise WorkDirLockedError(refusal)
        return lock

    def load_or_resume(self):
        """mmengine's, saying what ``resume`` found (see
        :func:`.resume.find_resume_checkpoint`)."""
        if self._has_loaded:
            return None
        if not (self._resume and self._load_from is None):
            return super().load_or_resume()  # a given path, or load_from
        resume_from = find_resume_checkpoint(self.work_dir, self.logger)
        if resume_from is not None:
            self.logger.info(f'Resuming from {resume_from}.')
            self.resume(resume_from)
            self._has_loaded = True
        return None

    def resume(self, filename, resume_optimizer=True,
               resume_param_scheduler=True, map_location='default'):
        """mmengine's; the training data then follows the seed restored
        from the checkpoint (see :func:`.seeded_data.follow_resumed_seed`).
        """
        self._resuming = filename
        try:
            super().resume(filename, resume_optimizer,
                           resume_param_scheduler, map_location)
        finally:
            self._resuming = None
        if isinstance(self._train_loop, BaseLoop) and not \
                self._randomness_cfg.get('diff_rank_seed', False):
            follow_resumed_seed(self._train_loop.dataloader, self.seed)

    @master_only
    def save_checkpoint(self,
                        out_dir,
                        filename,
                        file_client_args=None,
                        save_optimizer=True,
                        save_param_scheduler=True,
                        meta=None,
                        by_epoch=True,
                        backend_args=None):
        """Save ``meta``, weights, message hub, optimizer and scheduler
        states (mmengine's checkpoint layout) as plain data.

        Same arguments as ``Runner.save_checkpoint``. Local files are
        written atomically; other backends get mmengine's writer.
        """
        if meta is None:
            meta = {}
        elif not isinstance(meta, dict):
            raise TypeError(f'meta must be a dict or None, got {type(meta)}')
        # CheckpointHook saves at the end of an epoch/iteration, before the
        # loop increments its counter: record the completed count.
        meta.setdefault('epoch', self.epoch + 1 if by_epoch else self.epoch)
        meta.setdefault('iter', self.iter if by_epoch else self.iter + 1)
        meta.update(
            cfg=self.cfg.pretty_text,
            seed=self.seed,
            experiment_name=self.experiment_name,
            time=time.strftime('%Y%m%d_%H%M%S', time.localtime()),
            mmengine_version=mmengine.__version__ + get_git_hash())
        dataset = self.train_dataloader.dataset
        if hasattr(dataset, 'metainfo'):
            meta.update(dataset_meta=dataset.metainfo)

        model = self.model.module if is_model_wrapper(
            self.model) else self.model
        checkpoint = dict(
            meta=meta,
            state_dict=weights_to_cpu(model.state_dict()),
            message_hub=_to_cpu(self.message_hub.state_dict()))
        if save_optimizer:
            if not isinstance(self.optim_wrapper, OptimWrapper):
                raise TypeError(
                    'save_optimizer=True needs runner.optim_wrapper to be an '
                    f'OptimWrapper or OptimWrapperDict, got '
                    f'{type(self.optim_wrapper)}.')
            checkpoint['optimizer'] = _to_cpu(self.optim_wrapper.state_dict())
        if save_param_scheduler and self.param_schedulers is None:
            self.logger.warning('save_param_scheduler=True but there are no '
                                'param_schedulers; not saving any.')
            save_param_scheduler = False
        if save_param_scheduler:
            checkpoint['param_schedulers'] = self._scheduler_states()

        self.call_hook('before_save_checkpoint', checkpoint=checkpoint)
        checkpoint['message_hub'], dropped = message_hub_to_plain(
            checkpoint['message_hub'])
        checkpoint = to_plain(checkpoint, 'checkpoint', dropped)
        self._report_dropped(dropped)

        if file_client_args is not None:
            # Deprecated mmengine argument: let mmengine resolve it.
            save_checkpoint(checkpoint, join_path(out_dir, filename),
                            file_client_args=file_client_args)
            return
        filepath = join_path(out_dir, filename, backend_args=backend_args)
        backend = get_file_backend(filepath, backend_args=backend_args)
        if isinstance(backend, LocalBackend):
            save_checkpoint_file(checkpoint, filepath)
        else:
            save_checkpoint(checkpoint, filepath, backend_args=backend_args)

    def _scheduler_states(self):
        if isinstance(self.param_schedulers, dict):
            return {
                name: [s.state_dict() for s in schedulers]
                for name, schedulers in self.param_schedulers.items()
            }
        return [s.state_dict() for s in self.param_schedulers]

    def _report_dropped(self, dropped):
        """Warn once per run and value about state that is not plain data
        and so is not saved (a message-hub value mmengine recomputes, a
        scheduler's bound method its constructor sets again)."""
        reported = self.__dict__.setdefault('_reported_dropped', set())
        new = [item for item in dropped if item not in reported]
        if new:
            reported.update(new)
            self.logger.warning(
                'Not saved in the checkpoint (not plain data, so '
                f'torch.load(weights_only=True) would refuse it): {new}')

    def load_checkpoint(self,
                        filename,
                        map_location='cpu',
                        strict=False,
                        revise_keys=[(r'^module\.', '')]):
        """Load ``filename`` safely into the model; returns the checkpoint
        in the form mmengine's ``resume`` expects.

        Everything but the weights and the message hub is reduced to plain
        data: placeholders for objects a foreign file held (a scheduler's
        bound method, a ``ConfigDict`` in the meta) are dropped, so the
        built components keep their own values for them.
        """
        checkpoint = _load_checkpoint(filename, map_location=map_location)
        if not isinstance(checkpoint, dict):
            raise RuntimeError(f'{filename} holds a '
                               f'{type(checkpoint).__name__}, not a '
                               'checkpoint dict.')
        for key in list(checkpoint):
            if key == 'state_dict':
                continue
            if key == 'message_hub' and isinstance(checkpoint[key], dict):
                checkpoint[key] = message_hub_from_plain(checkpoint[key])
                continue
            dropped = []
            checkpoint[key] = to_plain(checkpoint[key], key, dropped)
            if dropped:
                self.logger.warning(f'{filename}: not loaded (not plain '
                                    f'data): {"; ".join(dropped)}')
        if not isinstance(checkpoint.get('message_hub', {}), dict):
            self.logger.warning(f'{filename}: the message hub is a '
                                f'{type(checkpoint["message_hub"]).__name__}'
                                ', not a state dict; log history is not '
                                'resumed.')
            checkpoint['message_hub'] = message_hub_from_plain({})

        if getattr(self, '_resuming', None) is not None:
            check_resumable(checkpoint, filename)
        self.call_hook('after_load_checkpoint', checkpoint=checkpoint)
        load_model_weights(
            self.model,
            checkpoint,
            strict=strict,
            logger=self.logger,
            revise_keys=revise_keys,
            source=filename)
        self._has_loaded = True
        self.logger.info(f'Load checkpoint from {filename}')
        return checkpoint
