"""Write the HTML evaluation report after testing, or after the final
validation of a training run."""
import os.path as osp
import time

from mmengine.dist import is_main_process
from mmengine.hooks import Hook
from mmengine.runner import BaseLoop

from detkit.registry import HOOKS


@HOOKS.register_module()
class ReportHook(Hook):
    """The report of :mod:`detkit.visualization.report` for the run's own
    evaluation: the evaluator's numbers as logged, with the predictions
    kept in memory while it ran (no second inference, no results file).

    ``tools/test.py --report PATH`` and ``tools/train.py --report PATH``
    register it; in a config::

        custom_hooks = [dict(type='ReportHook', out='report.html')]

    A test writes the page after the test epoch; a training run after its
    last validation (the last epoch or iteration; a validation run on its
    own, ``runner.val()``, counts as last too), with the run's loss and mAP
    curves. In distributed runs every rank keeps its share of the
    predictions and the main process writes the page.

    Args:
        out (str): the ``.html`` to write (relative paths: from the current
            directory).
        score_thr (float): confusion matrix and drawn predictions.
        topk (int): worst and best images in the gallery.
        tp_iou_thr (float): the confusion matrix's IoU for a match.
        scalars (str, optional): a ``scalars.json`` for the training
            curves; default: this run's (training) or the one next to the
            tested checkpoint (``<ckpt dir>/<timestamp>/vis_data/``).
    """

    # After LoggerHook (BELOW_NORMAL) wrote the final metrics to the log.
    priority = 'LOW'

    def __init__(self, out, score_thr=0.3, topk=12, tp_iou_thr=0.5,
                 scalars=None):
        if not str(out).endswith(('.html', '.htm')):
            raise ValueError(f'ReportHook: out={out!r} must end with .html')
        self.out = str(out)
        self.score_thr = score_thr
        self.topk = topk
        self.tp_iou_thr = tp_iou_thr
        self.scalars = scalars
        self._collector = None
        self.written = None

    # -- when -------------------------------------------------------------
    @staticmethod
    def _last_validation(runner):
        loop = getattr(runner, '_train_loop', None)
        if not isinstance(loop, BaseLoop):
            return True  # runner.val() on its own
        if hasattr(loop, 'max_epochs'):
            return loop.epoch >= loop.max_epochs
        return loop.iter >= loop.max_iters

    def before_val_epoch(self, runner):
        if self._last_validation(runner):
            self._attach(runner.val_evaluator)

    def after_val_epoch(self, runner, metrics=None):
        if self._collector is not None:
            self._write(runner, runner.val_evaluator,
                        runner.val_dataloader.dataset, metrics, 'val')

    def before_test_epoch(self, runner):
        self._attach(runner.test_evaluator)

    def after_test_epoch(self, runner, metrics=None):
        if self._collector is not None:
            self._write(runner, runner.test_evaluator,
                        runner.test_dataloader.dataset, metrics, 'test')

    def after_train(self, runner):
        if self.written is None and is_main_process():
            runner.logger.warning(
                f'ReportHook: no validation ran after the last training '
                f'epoch, so {self.out} was not written (set '
                'train_cfg.val_interval so that the last epoch validates).')

    # -- how --------------------------------------------------------------
    def _attach(self, evaluator):
        from detkit.evaluation.analysis import (ResultsCollector,
                                                forget_coco_evals)
        forget_coco_evals(evaluator.metrics)
        self._collector = ResultsCollector()
        evaluator.metrics.append(self._collector)

    def _write(self, runner, evaluator, dataset, metrics, mode):
        from detkit.evaluation.analysis import ground_truth, match_results
        from detkit.visualization.report import (build_report,
                                                 describe_dataset,
                                                 find_scalars, write_report)
        collector, self._collector = self._collector, None
        evaluator.metrics.remove(collector)
        if not is_main_process():
            return
        start = time.perf_counter()
        pairs = match_results(collector.collected or [],
                              ground_truth(dataset), 'the evaluated results')
        checkpoint = runner.cfg.get('load_from')
        scalars = self.scalars
        training = isinstance(getattr(runner, '_train_loop', None), BaseLoop)
        if mode == 'val' and training:
            checkpoint = (f'trained in this run ({runner.work_dir}, epoch '
                          f'{runner.epoch}, iteration {runner.iter})')
            # LoggerHook's log of this run, else the visualizer's.
            logs = [osp.join(runner.log_dir, 'vis_data', name)
                    for name in (f'{runner.timestamp}.json', 'scalars.json')]
            scalars = scalars or next(
                (path for path in logs if osp.isfile(path)), None)
        elif scalars is None and checkpoint and '://' not in checkpoint:
            scalars = find_scalars(osp.dirname(osp.abspath(checkpoint)))
        config = runner.cfg.filename or runner.experiment_name
        info = dict(config=osp.basename(str(config)),
                    checkpoint=checkpoint or 'none',
                    dataset=describe_dataset(dataset))
        html = build_report(pairs, dataset.metainfo['classes'],
                            evaluator.metrics, metrics or {}, info,
                            scalars=scalars, score_thr=self.score_thr,
                            topk=self.topk, tp_iou_thr=self.tp_iou_thr)
        size = write_report(self.out, html)
        self.written = osp.abspath(self.out)
        runner.logger.info(
            f'Evaluation report written to {self.written} ({size / 1e6:.2f} '
            f'MB, {time.perf_counter() - start:.1f} s)')
