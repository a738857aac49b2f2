"""One self-contained HTML page that shows how good a model is, where it
fails and on which images, from a results file.

    python tools/test.py CONFIG CKPT --out results.pkl
    python tools/analysis_tools/report.py CONFIG results.pkl \
        --out report.html [--score-thr 0.3] [--topk 12] \
        [--checkpoint CKPT] [--scalars RUN_DIR/vis_data/scalars.json]

(``tools/test.py CONFIG CKPT --report report.html`` writes the same page
straight after testing.) The config's ``test_evaluator`` (else
``val_evaluator``) evaluates the file exactly as ``tools/test.py`` did, and
the page shows its numbers with the confusion matrix of
``confusion_matrix.py`` (at ``--score-thr`` / ``--tp-iou-thr``), the
per-image AP ranking of ``analyze_results.py`` (``--topk`` worst and best
images), an error breakdown, score distributions and, with ``--scalars``,
the training curves. Open the file in any browser; it needs no server and
no network.
"""
import argparse
import os.path as osp
import sys
import time

from mmengine.config import DictAction

from detkit.evaluation.analysis import evaluate_results
from detkit.visualization.report import (build_report, describe_dataset,
                                         write_report)

sys.path.insert(0, osp.dirname(osp.abspath(__file__)))
from results_io import (build_test_dataset, evaluator_cfg,  # noqa: E402
                        ground_truth, load_cfg, load_results, match_results)


def parse_args(argv=None):
    parser = argparse.ArgumentParser(
        description='Write an HTML evaluation report of a results file')
    parser.add_argument('config', help='test config file')
    parser.add_argument('prediction_path', help='tools/test.py --out file')
    parser.add_argument('--out', required=True, help='the .html to write')
    parser.add_argument('--score-thr', type=float, default=0.3,
                        help='score threshold of the confusion matrix and '
                        'of the drawn predictions')
    parser.add_argument('--tp-iou-thr', type=float, default=0.5,
                        help='IoU of a match in the confusion matrix')
    parser.add_argument('--topk', type=int, default=12,
                        help='worst and best images shown (at most 50 each)')
    parser.add_argument('--checkpoint', default=None,
                        help='the checkpoint the results came from (shown '
                        'in the header)')
    parser.add_argument('--scalars', default=None,
                        help="a training run's vis_data/scalars.json for "
                        'the loss and mAP curves')
    parser.add_argument('--cfg-options', nargs='+', action=DictAction)
    return parser.parse_args(argv)


def main(argv=None):
    """Returns the path of the page."""
    args = parse_args(argv)
    if args.topk < 1:
        raise SystemExit(f'--topk must be >= 1, got {args.topk}')
    if not args.out.endswith(('.html', '.htm')):
        raise SystemExit(f'--out {args.out}: the report must end with .html')
    start = time.perf_counter()
    cfg = load_cfg(args.config, args.cfg_options)
    dataset = build_test_dataset(cfg)
    results = load_results(args.prediction_path)
    metrics, evaluator = evaluate_results(evaluator_cfg(cfg, args.config),
                                          dataset.metainfo, results)
    pairs = match_results(results, ground_truth(dataset),
                          args.prediction_path)
    info = dict(config=osp.basename(args.config),
                checkpoint=args.checkpoint or 'not given (--checkpoint)',
                dataset=describe_dataset(dataset))
    html = build_report(pairs, dataset.metainfo['classes'], evaluator.metrics,
                        metrics, info, scalars=args.scalars,
                        score_thr=args.score_thr, topk=args.topk,
                        tp_iou_thr=args.tp_iou_thr)
    size = write_report(args.out, html)
    print(f'report written to {args.out} ({size / 1e6:.2f} MB, '
          f'{time.perf_counter() - start:.1f} s)')
    return args.out


if __name__ == '__main__':
    main()
