"""Data loader settings that keep loading off the critical path
(:meth:`detkit.engine.DetRunner.build_dataloader` applies both).

* :class:`WorkerInit`: every worker process runs OpenCV single-threaded
  (``cv2.setNumThreads(0)``) before the wrapped ``worker_init_fn``
  (mmengine's seeding, unchanged). Each worker decodes and resizes one
  image at a time; OpenCV's own thread pool in every worker would compete
  with the training threads for the same cores. The main process gets the
  same setting from ``env_cfg.mp_cfg.opencv_num_threads`` and passes it on
  when workers fork, but not to spawned workers nor to loaders built
  without a runner.
* :func:`resolve_pin_memory`: ``pin_memory`` defaults to whether CUDA is
  available (page-locked batches copy to the GPU faster); without CUDA it
  is always off, since torch would only warn and ignore it.

Neither changes a sample: augmentations draw from the seeds of
:mod:`detkit.engine.seeded_data`, set per sample in whichever process
fetches it.
"""
import torch


class WorkerInit:
    """A picklable ``worker_init_fn``: OpenCV single-threaded, then
    ``inner(worker_id)`` when given."""

    def __init__(self, inner=None):
        self.inner = inner

    def __call__(self, worker_id: int) -> None:
        import cv2
        cv2.setNumThreads(0)
        if self.inner is not None:
            self.inner(worker_id)

    def __repr__(self):
        return f'WorkerInit({self.inner!r})'


def resolve_pin_memory(dataloader_cfg: dict) -> dict:
    """A copy of ``dataloader_cfg`` whose ``pin_memory`` is set: the
    config's value where CUDA is available (True when absent), False
    otherwise."""
    cfg = dict(dataloader_cfg)
    cuda = torch.cuda.is_available()
    cfg['pin_memory'] = bool(cfg.get('pin_memory', True)) and cuda
    return cfg


def with_worker_init(dataloader):
    """Give a built DataLoader with workers a :class:`WorkerInit` around
    its ``worker_init_fn`` (once); returns the loader."""
    workers = getattr(dataloader, 'num_workers', 0)
    init = getattr(dataloader, 'worker_init_fn', None)
    if workers > 0 and not isinstance(init, WorkerInit):
        dataloader.worker_init_fn = WorkerInit(init)
    return dataloader
