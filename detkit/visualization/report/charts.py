"""Small inline SVG charts for the HTML report: line charts, horizontal
bars (grouped or stacked) and histograms.

Hand-written SVG instead of matplotlib figures: the page stays one small
text file that opens offline, charts stay sharp at any zoom, every mark
carries a ``<title>`` tooltip with its exact value, and building a page for
80 classes takes milliseconds. Coordinates: data values map linearly into a
plot box inside ``width x height`` pixels, y growing upwards.
"""
import math
from html import escape

import numpy as np

FONT = 'font-family="system-ui, -apple-system, Segoe UI, sans-serif"'
GRID = '#e3e6ea'
INK = '#333'


def nice_ticks(lo, hi, count=5):
    """About ``count`` round tick values covering ``[lo, hi]``."""
    if not math.isfinite(lo) or not math.isfinite(hi) or hi <= lo:
        return [lo]
    raw = (hi - lo) / max(count, 1)
    mag = 10**math.floor(math.log10(raw))
    step = next(m * mag for m in (1, 2, 2.5, 5, 10) if m * mag >= raw)
    first = math.ceil(lo / step - 1e-9) * step
    ticks = []
    value = first
    while value <= hi + step * 1e-9:
        ticks.append(round(value, 10))
        value += step
    return ticks


def _fmt(value):
    if value == 0:
        return '0'
    if abs(value) >= 1000:
        return f'{value:.0f}' if abs(value) < 1e5 else f'{value:.0e}'
    return f'{value:.3g}'


class _Frame:
    """Maps data to pixels and draws the axes of one chart."""

    def __init__(self, width, height, xlim, ylim, left=44, right=10, top=24,
                 bottom=34):
        self.width, self.height = width, height
        self.x0, self.x1 = left, width - right
        self.y0, self.y1 = height - bottom, top
        self.xlim, self.ylim = xlim, ylim

    def x(self, value):
        lo, hi = self.xlim
        return self.x0 + (value - lo) / ((hi - lo) or 1) * (self.x1 - self.x0)

    def y(self, value):
        lo, hi = self.ylim
        return self.y0 + (value - lo) / ((hi - lo) or 1) * (self.y1 - self.y0)

    def axes(self, title='', xlabel='', ylabel='', xticks=None, yticks=None):
        parts = []
        for tick in yticks if yticks is not None else nice_ticks(*self.ylim):
            y = self.y(tick)
            parts.append(f'<line x1="{self.x0}" y1="{y:.1f}" x2="{self.x1}" '
                         f'y2="{y:.1f}" stroke="{GRID}"/>'
                         f'<text x="{self.x0 - 4}" y="{y + 3.5:.1f}" '
                         f'text-anchor="end" font-size="10" fill="{INK}">'
                         f'{_fmt(tick)}</text>')
        for tick in xticks if xticks is not None else nice_ticks(*self.xlim):
            x = self.x(tick)
            parts.append(f'<line x1="{x:.1f}" y1="{self.y0}" x2="{x:.1f}" '
                         f'y2="{self.y0 + 3}" stroke="{INK}"/>'
                         f'<text x="{x:.1f}" y="{self.y0 + 14}" '
                         f'text-anchor="middle" font-size="10" fill="{INK}">'
                         f'{_fmt(tick)}</text>')
        parts.append(f'<rect x="{self.x0}" y="{self.y1}" '
                     f'width="{self.x1 - self.x0}" '
                     f'height="{self.y0 - self.y1}"'
                     f' fill="none" stroke="#9aa1a9"/>')
        if title:
            parts.append(f'<text x="{(self.x0 + self.x1) / 2:.1f}" y="15" '
                         f'text-anchor="middle" font-size="12" '
                         f'font-weight="600" fill="{INK}">{escape(title)}'
                         '</text>')
        if xlabel:
            parts.append(f'<text x="{(self.x0 + self.x1) / 2:.1f}" '
                         f'y="{self.y0 + 27}" text-anchor="middle" '
                         f'font-size="10.5" fill="{INK}">{escape(xlabel)}'
                         '</text>')
        if ylabel:
            cy = (self.y0 + self.y1) / 2
            parts.append(f'<text x="11" y="{cy:.1f}" text-anchor="middle" '
                         f'font-size="10.5" fill="{INK}" '
                         f'transform="rotate(-90 11 {cy:.1f})">'
                         f'{escape(ylabel)}</text>')
        return ''.join(parts)


def _svg(width, height, body, label):
    return (f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" '
            f'height="{height}" viewBox="0 0 {width} {height}" role="img" '
            f'aria-label="{escape(label)}" {FONT}>{body}</svg>')


LEGEND_TOP = 38  # top margin of a chart with a legend row under its title


def legend(items, x, y):
    """``items``: ``[(label, colour, dashed), ...]`` as one row of swatches
    starting at ``(x, y)``, above the plot (never over the data)."""
    parts = []
    for label, color, dashed in items:
        dash = ' stroke-dasharray="4 2"' if dashed else ''
        parts.append(f'<line x1="{x}" y1="{y}" x2="{x + 16}" y2="{y}" '
                     f'stroke="{color}" stroke-width="2.5"{dash}/>'
                     f'<text x="{x + 20}" y="{y + 3.5}" font-size="10" '
                     f'fill="{INK}">{escape(label)}</text>')
        x += 32 + 6.3 * len(label)
    return ''.join(parts)


def line_chart(series, width=300, height=220, xlim=None, ylim=None, title='',
               xlabel='', ylabel=''):
    """Lines (and a dot where a series has a single point).

    Args:
        series: ``[dict(xs, ys, color, label, dashed=False), ...]``.
        xlim, ylim: ``(lo, hi)``; default: the data's range.
    """
    xs = np.concatenate([np.asarray(s['xs'], float) for s in series] or
                        [np.zeros(1)])
    ys = np.concatenate([np.asarray(s['ys'], float) for s in series] or
                        [np.zeros(1)])
    if xlim is None:
        xlim = (float(np.nanmin(xs)), float(np.nanmax(xs)))
        if xlim[0] == xlim[1]:
            xlim = (xlim[0] - 1, xlim[1] + 1)
    if ylim is None:
        lo, hi = float(np.nanmin(ys)), float(np.nanmax(ys))
        pad = (hi - lo) * 0.05 or 1
        ylim = (min(0, lo) if lo >= 0 else lo - pad, hi + pad)
    labelled = [(s['label'], s['color'], s.get('dashed', False))
                for s in series if s.get('label')]
    frame = _Frame(width, height, xlim, ylim,
                   top=LEGEND_TOP if labelled else 24)
    body = [frame.axes(title, xlabel, ylabel)]
    for s in series:
        pts = [(frame.x(x), frame.y(y)) for x, y in zip(s['xs'], s['ys'])
               if math.isfinite(x) and math.isfinite(y)]
        tip = escape(s.get('label', ''))
        if len(pts) == 1:
            body.append(f'<circle cx="{pts[0][0]:.1f}" cy="{pts[0][1]:.1f}" '
                        f'r="3.5" fill="{s["color"]}"><title>{tip}</title>'
                        '</circle>')
        elif pts:
            dash = ' stroke-dasharray="5 3"' if s.get('dashed') else ''
            path = ' '.join(f'{x:.1f},{y:.1f}' for x, y in pts)
            body.append(f'<polyline points="{path}" fill="none" '
                        f'stroke="{s["color"]}" stroke-width="1.8"{dash}>'
                        f'<title>{tip}</title></polyline>')
    if labelled:
        body.append(legend(labelled, frame.x0, 28))
    return _svg(width, height, ''.join(body), title or ylabel)


def hbar_chart(labels, groups, width=560, xlim=(0, 1), title='', xlabel='',
               stacked=False, bar=13, gap=7):
    """Horizontal bars, one row per label.

    Args:
        labels (list[str]): row names, top to bottom.
        groups: ``[(name, values (len(labels),), colour), ...]``: side by
            side in a row, or end to end with ``stacked=True``.
    """
    per_row = bar if stacked else bar * len(groups)
    left = min(180, 12 + 6.2 * max([len(s) for s in labels] or [4]))
    top, bottom = 26, 34 + 18
    height = int(top + bottom + len(labels) * (per_row + gap))
    frame = _Frame(width, height, xlim, (0, 1), left=left, right=14, top=top,
                   bottom=bottom)
    body = [frame.axes(title, xlabel, '', yticks=[])]
    for i, name in enumerate(labels):
        y = top + gap / 2 + i * (per_row + gap)
        body.append(f'<text x="{left - 5}" y="{y + per_row / 2 + 3.5:.1f}" '
                    f'text-anchor="end" font-size="10.5" fill="{INK}">'
                    f'{escape(name)}</text>')
        start = xlim[0]
        for j, (group, values, color) in enumerate(groups):
            value = float(values[i])
            if not math.isfinite(value):
                continue
            yy = y if stacked else y + j * bar
            x_from = frame.x(start if stacked else xlim[0])
            x_to = frame.x((start + value) if stacked else value)
            w = max(x_to - x_from, 0)
            body.append(f'<rect x="{x_from:.1f}" y="{yy:.1f}" width="{w:.1f}"'
                        f' height="{bar - 1}" fill="{color}"><title>'
                        f'{escape(name)} · {escape(group)}: {value:.3f}'
                        '</title></rect>')
            if stacked:
                start += value
    items = [(g, c, False) for g, _, c in groups]
    x = left
    for label, color, _ in items:
        body.append(f'<rect x="{x}" y="{height - 13}" width="11" height="9" '
                    f'fill="{color}"/><text x="{x + 14}" y="{height - 5}" '
                    f'font-size="10" fill="{INK}">{escape(label)}</text>')
        x += 22 + 6.2 * len(label)
    return _svg(width, height, ''.join(body), title)


def histogram(series, bins=20, value_range=(0, 1), width=300, height=200,
              title='', xlabel='', marker=None):
    """Counts of each series' values in ``bins`` equal bins, drawn as
    outlined steps so that overlapping series stay readable.

    Args:
        series: ``[(label, values, colour), ...]``.
        marker (float, optional): a vertical dashed line (e.g. a
            threshold).
    """
    counts = [np.histogram(np.asarray(v, float), bins=bins,
                           range=value_range)[0] for _, v, _ in series]
    edges = np.linspace(value_range[0], value_range[1], bins + 1)
    top = max([int(c.max()) for c in counts if c.size] + [1])
    frame = _Frame(width, height, value_range, (0, top * 1.08),
                   top=LEGEND_TOP)
    body = [frame.axes(title, xlabel, 'detections')]
    for (label, values, color), count in zip(series, counts):
        pts = [(frame.x(edges[0]), frame.y(0))]
        for k, c in enumerate(count):
            pts += [(frame.x(edges[k]), frame.y(c)),
                    (frame.x(edges[k + 1]), frame.y(c))]
        pts.append((frame.x(edges[-1]), frame.y(0)))
        path = ' '.join(f'{x:.1f},{y:.1f}' for x, y in pts)
        body.append(f'<polygon points="{path}" fill="{color}" '
                    f'fill-opacity="0.25" stroke="{color}" stroke-width="1.5">'
                    f'<title>{escape(label)}: {len(values)}</title>'
                    '</polygon>')
    if marker is not None and math.isfinite(marker):
        x = frame.x(marker)
        body.append(f'<line x1="{x:.1f}" y1="{frame.y0}" x2="{x:.1f}" '
                    f'y2="{frame.y1}" stroke="{INK}" stroke-dasharray="4 3">'
                    f'<title>threshold {marker:.3f}</title></line>')
    body.append(legend([(f'{label} ({len(v)})', c, False)
                        for label, v, c in series], frame.x0, 28))
    return _svg(width, height, ''.join(body), title)
