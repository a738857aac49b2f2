"""Keep the predictions of one evaluation pass in memory, for the report
that ``tools/test.py --report`` and :class:`ReportHook` write."""
from mmengine.evaluator import BaseMetric
from mmengine.structures import BaseDataElement


class ResultsCollector(BaseMetric):
    """A metric that computes nothing: it keeps every image's
    ``img_id``, ``img_path``, ``ori_shape`` and ``pred_instances`` (CPU
    tensors), the fields of a ``tools/test.py --out`` file that the
    analyses read.

    Append it to an evaluator's ``metrics``; after the evaluation, on the
    main process, :attr:`collected` holds the results of every rank in
    dataset order (mmengine's ``collect_results``), else None.
    """

    default_prefix = 'report'

    def __init__(self, collect_device='cpu'):
        super().__init__(collect_device=collect_device)
        self.collected = None

    def process(self, data_batch, data_samples):
        for sample in data_samples:
            if isinstance(sample, BaseDataElement):
                sample = sample.to_dict()
            pred = sample['pred_instances']
            self.results.append(dict(
                img_id=sample['img_id'], img_path=sample.get('img_path'),
                ori_shape=sample.get('ori_shape'),
                pred_instances={
                    key: pred[key].detach().cpu()
                    for key in ('bboxes', 'scores', 'labels')
                }))

    def compute_metrics(self, results):
        self.collected = list(results)
        return {}
