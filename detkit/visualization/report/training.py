"""Training curves for the report, from mmengine's JSON scalar log of a run
(``<work_dir>/<timestamp>/vis_data/scalars.json``: one JSON object per
logged step).

Training lines carry ``loss...``, ``lr``, ``epoch``, ``iter`` and ``step``
(the global iteration); validation lines carry the metrics, whose keys hold
a ``/`` (``coco/bbox_mAP``), and ``step`` (the epoch, or the iteration for
iteration-based training).
"""
import glob
import json
import os.path as osp


def load_scalars(path):
    """``(train, val)``: lists of the training and validation records of
    the log at ``path``."""
    train, val = [], []
    with open(path) as f:
        for number, line in enumerate(f, 1):
            line = line.strip()
            if not line:
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError as err:
                raise ValueError(f'{path}, line {number}: not JSON ({err}); '
                                 'pass the scalars.json log, not the .log '
                                 'text log') from None
            (val if any('/' in key for key in record) else train).append(
                record)
    return train, val


def find_scalars(folder):
    """The newest ``<folder>/<timestamp>/vis_data/scalars.json`` that holds
    training lines (the run that wrote the checkpoints in ``folder``), or
    None."""
    if not folder or not osp.isdir(folder):
        return None
    for path in sorted(glob.glob(osp.join(folder, '*', 'vis_data',
                                          'scalars.json')), reverse=True):
        train, _ = load_scalars(path)
        if any(any(k.startswith('loss') for k in r) for r in train):
            return path
    return None


def curves(train, val):
    """``(losses, metrics)``: ``{key: (steps, values)}`` for every training
    key starting with ``loss`` and every validation metric whose name ends
    in ``mAP``, ``mAP_50``, ``mAP_75`` or ``AP50`` (the box AP keys of
    CocoMetric and VOCMetric)."""

    def series(records, keep):
        out = {}
        for record in records:
            for key, value in record.items():
                if keep(key) and isinstance(value, (int, float)):
                    steps, values = out.setdefault(key, ([], []))
                    steps.append(record.get('step', len(steps)))
                    values.append(float(value))
        return out

    losses = series(train, lambda k: k.startswith('loss'))
    metrics = series(val, lambda k: k.split('/')[-1] in (
        'bbox_mAP', 'bbox_mAP_50', 'bbox_mAP_75', 'mAP', 'AP50'))
    return losses, metrics
