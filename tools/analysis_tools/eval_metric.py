"""Evaluate a saved results file without the model.

    python tools/test.py CONFIG CKPT --out results.pkl
    python tools/analysis_tools/eval_metric.py CONFIG results.pkl \
        --cfg-options test_evaluator.classwise=True

Runs the config's ``test_evaluator`` (else ``val_evaluator``), e.g.
``CocoMetric`` against its ``ann_file``, on the predictions of the file,
exactly as ``tools/test.py`` did when it wrote them
(``detkit.evaluation.analysis.evaluate_results``, which ``report.py`` runs
too).
"""
import argparse
import os.path as osp
import sys

from mmengine.config import DictAction

from detkit.evaluation.analysis import evaluate_results

sys.path.insert(0, osp.dirname(osp.abspath(__file__)))
from results_io import (build_test_dataset, evaluator_cfg,  # noqa: E402
                        load_cfg, load_results)


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description='Evaluate a results file')
    parser.add_argument('config', help='test config file')
    parser.add_argument('pkl_results', help='tools/test.py --out file')
    parser.add_argument('--cfg-options', nargs='+', action=DictAction)
    return parser.parse_args(argv)


def main(argv=None):
    """Returns the metrics dict."""
    args = parse_args(argv)
    cfg = load_cfg(args.config, args.cfg_options)
    metrics, _ = evaluate_results(evaluator_cfg(cfg, args.config),
                                  build_test_dataset(cfg).metainfo,
                                  load_results(args.pkl_results))
    print(metrics)
    return metrics


if __name__ == '__main__':
    main()
