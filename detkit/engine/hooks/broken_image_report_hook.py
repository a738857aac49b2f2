"""Report the images a dataset could not read, once per training epoch."""
from mmengine.hooks import Hook

from detkit.registry import HOOKS


@HOOKS.register_module()
class BrokenImageReportHook(Hook):
    """At the end of each training epoch, log as a warning what the training
    dataset's ``report_broken()`` returns (a summary of unreadable images),
    when that is a non-empty string.

    Dataset wrappers are looked through: ``RepeatDataset`` / ``ClassBalanced
    Dataset`` (``.dataset``) and ``ConcatDataset`` (``.datasets``).
    """

    priority = 'LOW'

    def after_train_epoch(self, runner):
        for report in _reports(runner.train_dataloader.dataset):
            runner.logger.warning(report)


def _reports(dataset):
    report_broken = getattr(dataset, 'report_broken', None)
    if callable(report_broken):
        report = report_broken()
        if isinstance(report, str) and report:
            yield report
        return
    if hasattr(dataset, 'datasets'):
        for inner in dataset.datasets:
            yield from _reports(inner)
    elif hasattr(dataset, 'dataset'):
        yield from _reports(dataset.dataset)
