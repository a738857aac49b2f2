"""Plot training curves and measure training speed from mmengine's JSON
scalar logs (``<work_dir>/<timestamp>/vis_data/<timestamp>.json`` or
``scalars.json``: one JSON object per logged step).

    python tools/analysis_tools/analyze_logs.py plot_curve LOG.json \
        --keys loss_cls loss_bbox --out curve.png
    python tools/analysis_tools/analyze_logs.py plot_curve A.json B.json \
        --keys bbox_mAP --legend run_a run_b --out map.png
    python tools/analysis_tools/analyze_logs.py plot_curve LOG.json \
        --keys bbox_mAP --start-epoch 5 --eval-interval 2 --style whitegrid
    python tools/analysis_tools/analyze_logs.py cal_train_time LOG.json

Training lines carry ``loss...``, ``lr``, ``time``, ``epoch``, ``iter`` and
``step`` (the global iteration); validation lines carry the metrics, whose
keys hold a ``/`` (``coco/bbox_mAP``), and ``step`` (the epoch, or the
iteration for iteration-based training). A key is plotted against ``step``;
``bbox_mAP`` also finds ``coco/bbox_mAP``.

mmdetection's plot flags: ``--start-epoch N`` plots epochs N and later
(epoch-based logs), ``--eval-interval K`` is the training's validation
interval (an error says so when a metric is logged at other epochs),
``--style`` a seaborn style name (``dark``, the default, ``white``,
``whitegrid``, ``darkgrid``, ``ticks``; matplotlib's copies of them serve
without seaborn) or any matplotlib style, ``--backend`` the matplotlib
backend.
"""
import argparse
import json
import os.path as osp
from collections import OrderedDict

import numpy as np


def load_json_log(path):
    """``(train, val)``: lists of the training and validation records."""
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
                                 'pass the .json scalar log, not the .log '
                                 'text log') from None
            if any('/' in key for key in record):
                val.append(record)
            else:
                train.append(record)
    return train, val


def _match_key(key, records):
    """The logged key meant by ``key``: itself, or ``<prefix>/key``."""
    names = OrderedDict()
    for record in records:
        names.update((name, None) for name in record)
    if key in names:
        return key
    suffixed = [name for name in names if name.endswith('/' + key)]
    return suffixed[0] if suffixed else None


def curve(path, key, start_epoch=1, eval_interval=1):
    """``(xs, ys)`` of ``key`` in the log: the ``step`` of every line that
    has the key, and its values, from epoch ``start_epoch`` on.

    A validation metric of an epoch-based log must sit at multiples of
    ``eval_interval`` (or at the last epoch, where mmengine validates too).
    """
    train, val = load_json_log(path)
    epochs = [r['epoch'] for r in train if 'epoch' in r]
    if start_epoch > 1 and not epochs:
        raise ValueError(f'{path} logs no epochs (iteration-based training);'
                         ' --start-epoch applies to epoch-based logs')
    for records, is_val in ((val, True), (train, False)):
        name = _match_key(key, records)
        if name is None:
            continue
        rows = [(r.get('step', i + 1), r[name], r.get('epoch'))
                for i, r in enumerate(records) if name in r]
        if is_val and epochs:
            # epoch-based: a validation line's step is its epoch
            rows = [(x, y, x) for x, y, _ in rows]
            off = [x for x, _, _ in rows
                   if x % eval_interval and x != max(epochs)]
            if off:
                raise ValueError(
                    f'{path} logs {name} at epochs '
                    f'{[x for x, _, _ in rows]}, not every {eval_interval} '
                    'epoch(s); set --eval-interval to the val_interval of '
                    'the training (train_cfg.val_interval)')
        if epochs:
            rows = [row for row in rows
                    if row[2] is None or row[2] >= start_epoch]
        return [x for x, _, _ in rows], [y for _, y, _ in rows]
    known = sorted({k for r in train + val for k in r})
    raise KeyError(f'{path} has no key {key!r}; it logs {known}')


_SEABORN_STYLES = ('white', 'dark', 'whitegrid', 'darkgrid', 'ticks')


def _style_context(style):
    """A context with the seaborn style ``style`` (through seaborn when it
    is installed, as mmdetection, else matplotlib's copy of it) or the
    matplotlib style ``style``; None keeps the current one."""
    import contextlib

    import matplotlib.pyplot as plt
    if style is None:
        return contextlib.nullcontext()
    if style in _SEABORN_STYLES:
        try:
            import seaborn
        except ImportError:
            pass
        else:
            return seaborn.axes_style(style)
    for name in (style, f'seaborn-v0_8-{style}', f'seaborn-{style}'):
        if name in plt.style.available:
            return plt.style.context(name)
    raise ValueError(f'--style {style!r} is neither a seaborn style '
                     f'{_SEABORN_STYLES} nor a matplotlib style '
                     f'({", ".join(sorted(plt.style.available))})')


def plot_curve(logs, keys, out=None, legend=None, title=None,
               figsize=(8, 5), dpi=100, start_epoch=1, eval_interval=1,
               style='dark', backend=None):
    """Plot every key of every log in one figure; save it to ``out`` (PNG)
    when given. Returns ``{legend: (xs, ys)}``."""
    import matplotlib
    if start_epoch < 1 or eval_interval < 1:
        raise ValueError(f'--start-epoch ({start_epoch}) and --eval-interval'
                         f' ({eval_interval}) must be at least 1')
    if backend:
        try:
            matplotlib.use(backend)
        except (ValueError, ImportError) as err:
            raise ValueError(f'--backend {backend!r}: {err}') from None
    elif out:
        matplotlib.use('Agg')  # no display needed to write a file
    import matplotlib.pyplot as plt
    with _style_context(style):
        return _plot(plt, logs, keys, out, legend, title, figsize, dpi,
                     start_epoch, eval_interval)


def _plot(plt, logs, keys, out, legend, title, figsize, dpi, start_epoch,
          eval_interval):
    """The figure of :func:`plot_curve`, in the current style."""
    names = legend or [
        f'{osp.splitext(osp.basename(log))[0]}_{key}' for log in logs
        for key in keys
    ]
    if len(names) != len(logs) * len(keys):
        raise ValueError(f'--legend needs {len(logs) * len(keys)} names '
                         f'(one per log and key), got {len(names)}')
    fig = plt.figure(figsize=figsize, dpi=dpi)
    series = OrderedDict()
    names = iter(names)
    for log in logs:
        for key in keys:
            xs, ys = curve(log, key, start_epoch, eval_interval)
            name = next(names)
            series[name] = (xs, ys)
            plt.plot(xs, ys, label=name, linewidth=0.8,
                     marker='o' if len(xs) < 30 else None)
    plt.xlabel('step (iteration; epoch for per-epoch validation)')
    plt.legend()
    if title:
        plt.title(title)
    if out:
        fig.savefig(out, dpi=dpi)
        print(f'saved the curve to {out}')
    else:
        plt.show()
    plt.close(fig)
    return series


def cal_train_time(path, include_outliers=False):
    """Seconds per training iteration: per epoch and overall.

    The first iteration of each epoch (data loader start-up) is left out
    unless ``include_outliers``.
    """
    train, _ = load_json_log(path)
    epochs = OrderedDict()
    for record in train:
        if 'time' in record:
            epochs.setdefault(record.get('epoch', 1), []).append(
                record['time'])
    if not include_outliers:
        epochs = OrderedDict((e, t[1:]) for e, t in epochs.items())
    epochs = OrderedDict((e, t) for e, t in epochs.items() if t)
    if not epochs:
        raise KeyError(f'{path} logs no training iteration times ("time")')
    means = np.array([np.mean(t) for t in epochs.values()])
    epoch_ids = list(epochs)
    result = dict(
        epoch_mean=dict(zip(epoch_ids, means.tolist())),
        slowest_epoch=epoch_ids[int(means.argmax())],
        fastest_epoch=epoch_ids[int(means.argmin())],
        std_over_epochs=float(means.std()),
        mean_iter_time=float(np.mean(np.concatenate(list(epochs.values())))))
    print(f'-----Analyze train time of {path}-----')
    print(f'slowest epoch {result["slowest_epoch"]}, average time is '
          f'{means.max():.4f} s/iter')
    print(f'fastest epoch {result["fastest_epoch"]}, average time is '
          f'{means.min():.4f} s/iter')
    print(f'time std over epochs is {result["std_over_epochs"]:.4f}')
    print(f'average iter time: {result["mean_iter_time"]:.4f} s/iter')
    return result


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description='Analyze JSON logs')
    sub = parser.add_subparsers(dest='task', required=True)
    plot = sub.add_parser('plot_curve', help='plot logged values')
    plot.add_argument('json_logs', nargs='+', help='JSON scalar logs')
    plot.add_argument('--keys', nargs='+', default=['bbox_mAP'],
                      help='keys to plot (default bbox_mAP)')
    plot.add_argument('--legend', nargs='+', help='one name per log and key')
    plot.add_argument('--title', help='figure title')
    plot.add_argument('--out', help='PNG file to write (else: show it)')
    plot.add_argument('--figsize', nargs=2, type=float, default=[8, 5],
                      help='inches (at 100 dpi)')
    plot.add_argument('--start-epoch', type=int, default=1,
                      help='plot from this epoch on (epoch-based logs)')
    plot.add_argument('--eval-interval', type=int, default=1,
                      help='the validation interval of the training, in '
                      'epochs (checked against the log)')
    plot.add_argument('--style', default='dark',
                      help='seaborn style (white, dark, whitegrid, '
                      'darkgrid, ticks) or matplotlib style')
    plot.add_argument('--backend', help='matplotlib backend (default: Agg '
                      'with --out, else matplotlib\'s)')
    timing = sub.add_parser('cal_train_time', help='seconds per iteration')
    timing.add_argument('json_logs', nargs='+', help='JSON scalar logs')
    timing.add_argument('--include-outliers', action='store_true',
                        help='keep the first iteration of every epoch')
    return parser.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    if args.task == 'plot_curve':
        return plot_curve(args.json_logs, args.keys, out=args.out,
                          legend=args.legend, title=args.title,
                          figsize=tuple(args.figsize),
                          start_epoch=args.start_epoch,
                          eval_interval=args.eval_interval,
                          style=args.style, backend=args.backend)
    return [cal_train_time(log, args.include_outliers)
            for log in args.json_logs]


if __name__ == '__main__':
    main()
