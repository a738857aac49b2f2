"""CheckpointHook whose ``last_checkpoint`` pointer is written atomically.

mmengine's CheckpointHook writes ``<work_dir>/last_checkpoint`` (the file
``--resume`` without a path reads) with a plain ``open(..., 'w')``: a crash
at that moment leaves it empty or truncated and auto-resume starts from
scratch. This subclass writes it through
:func:`~detkit.engine.checkpoint.atomic_write`, and writes published models
(``published_keys``) the same way. The checkpoints themselves are written
atomically by :meth:`DetRunner.save_checkpoint`.

It is registered as ``CheckpointHook`` in the detkit scope, so configs with
``default_scope = 'detkit'`` (and mmengine's default hooks built in that
scope) get it without naming it.
"""
import hashlib
import io
import os.path as osp

import torch
from mmengine.dist import is_main_process
from mmengine.hooks import CheckpointHook
from mmengine.logging import print_log

from detkit.registry import HOOKS
from ..checkpoint import atomic_write, load_checkpoint_file
from ..plain_data import to_plain


@HOOKS.register_module(name=['CheckpointHook', 'DetCheckpointHook'])
class DetCheckpointHook(CheckpointHook):
    """mmengine's CheckpointHook (same arguments) with atomic pointer and
    published-model writes."""

    def _save_checkpoint_with_step(self, runner, step, meta):
        if self.max_keep_ckpts > 0:
            self._forget_old_checkpoints(runner, step)
        filename = self.filename_tmpl.format(step)
        self.last_ckpt = self.file_backend.join_path(self.out_dir, filename)
        runner.message_hub.update_info('last_ckpt', self.last_ckpt)
        runner.save_checkpoint(
            self.out_dir,
            filename,
            self.file_client_args,
            save_optimizer=self.save_optimizer,
            save_param_scheduler=self.save_param_scheduler,
            meta=meta,
            by_epoch=self.by_epoch,
            backend_args=self.backend_args,
            **self.args)
        if is_main_process():
            # Only after the checkpoint is complete does the pointer move.
            pointer = osp.join(runner.work_dir, 'last_checkpoint')
            atomic_write(pointer, lambda f: f.write(self.last_ckpt.encode()))

    def _forget_old_checkpoints(self, runner, step):
        """Keep at most ``max_keep_ckpts``, counting the one about to be
        saved (``_save_checkpoint`` and ``_save_best_checkpoint`` may both
        save at the same step)."""
        if self.keep_ckpt_ids and self.keep_ckpt_ids[-1] == step:
            return
        if len(self.keep_ckpt_ids) == self.max_keep_ckpts:
            old = self.keep_ckpt_ids.popleft()
            if is_main_process():
                path = self.file_backend.join_path(
                    self.out_dir, self.filename_tmpl.format(old))
                if self.file_backend.isfile(path):
                    self.file_backend.remove(path)
                elif self.file_backend.isdir(path):  # e.g. DeepSpeed
                    self.file_backend.rmtree(path)
        self.keep_ckpt_ids.append(step)
        runner.message_hub.update_info('keep_ckpt_ids',
                                       list(self.keep_ckpt_ids))

    def _publish_model(self, runner, ckpt_path):
        """Keep only ``published_keys`` and save as
        ``<name>-<sha256[:8]>.pth`` next to ``ckpt_path``; the hash is the
        new file's, so ``sha256sum`` verifies it."""
        if not is_main_process():
            return
        checkpoint = load_checkpoint_file(ckpt_path)
        removed = [key for key in checkpoint if key not in self.published_keys]
        for key in removed:
            checkpoint.pop(key)
        if removed:
            print_log(f'Publishing {ckpt_path}: removed keys {removed} (not '
                      'in published_keys).', logger='current')
        buffer = io.BytesIO()
        torch.save(to_plain(checkpoint), buffer)
        data = buffer.getvalue()
        sha = hashlib.sha256(data).hexdigest()
        final_path = osp.splitext(ckpt_path)[0] + f'-{sha[:8]}.pth'
        atomic_write(final_path, lambda f: f.write(data))
        print_log(f'The checkpoint {ckpt_path} is published to {final_path}.',
                  logger='current')
