"""Run a config's evaluator on saved results, and find what the report
reads in an evaluator's metrics (the COCOeval object of CocoMetric, or
VOCMetric)."""
from ..coco_metric import CocoMetric
from ..voc_metric import VOCMetric


def evaluate_results(evaluator_cfg, dataset_meta, results):
    """Evaluate ``results`` (``tools/test.py --out`` dicts) exactly as
    ``tools/test.py`` did when it wrote them.

    Args:
        evaluator_cfg (dict | list): the config's ``test_evaluator`` (or
            ``val_evaluator``), e.g. ``dict(type='CocoMetric', ...)``.
        dataset_meta (dict): the test dataset's ``metainfo``.

    Returns:
        tuple: ``(metrics dict, mmengine Evaluator)``; the evaluator's
        ``metrics`` keep what they computed (see :func:`coco_eval_of`).
    """
    from mmengine.evaluator import Evaluator
    evaluator = Evaluator(evaluator_cfg)
    evaluator.dataset_meta = dataset_meta
    return evaluator.offline_evaluate(results), evaluator


def coco_eval_of(metrics):
    """The pycocotools (or faster-coco-eval) COCOeval object of the last
    box evaluation (``coco_evals['bbox']``) of the first ``CocoMetric``
    among ``metrics`` that evaluates ``'bbox'``; None when there is none
    (or it had no detection to evaluate)."""
    for metric in metrics:
        if isinstance(metric, CocoMetric) and 'bbox' in metric.metrics:
            return metric.coco_evals.get('bbox')
    return None


def forget_coco_evals(metrics):
    """Drop what the ``CocoMetric`` among ``metrics`` kept from an earlier
    evaluation, so that :func:`coco_eval_of` after the next one never
    returns a stale object (CocoMetric keeps the previous COCOeval when an
    evaluation has no detection at all)."""
    for metric in metrics:
        if isinstance(metric, CocoMetric):
            metric.coco_evals.pop('bbox', None)


def voc_metric_of(metrics):
    """The first ``VOCMetric(metric='mAP')`` among ``metrics``, or None."""
    for metric in metrics:
        if isinstance(metric, VOCMetric) and metric.metric == 'mAP':
            return metric
    return None
