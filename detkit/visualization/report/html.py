"""The HTML around the report's sections: one page with its style sheet
and a few lines of script inline (sortable tables), nothing fetched.

The page works without the script too; it only sorts tables when a column
header is clicked.
"""
import math
from html import escape

CSS = """
:root { --ink: #24292f; --muted: #57606a; --line: #d0d7de; --bg: #f6f8fa;
  --good: #1a7f37; --bad: #cf222e; --accent: #0969da; }
* { box-sizing: border-box; }
body { margin: 0; color: var(--ink); background: #fff;
  font: 14px/1.45 system-ui, -apple-system, "Segoe UI", sans-serif; }
header.top { background: #1f2937; color: #f3f4f6; padding: 18px 28px 12px; }
header.top h1 { margin: 0 0 4px; font-size: 22px; }
header.top .meta { color: #cbd5e1; font-size: 12.5px; }
header.top .meta span { margin-right: 12px; display: inline-block; }
nav { position: sticky; top: 0; z-index: 2; background: #fff;
  border-bottom: 1px solid var(--line); padding: 6px 28px; }
nav a { color: var(--accent); margin-right: 14px; text-decoration: none;
  font-size: 13px; }
main { padding: 4px 28px 40px; max-width: 1320px; }
section { margin-top: 26px; }
h2 { font-size: 18px; border-bottom: 1px solid var(--line);
  padding-bottom: 4px; margin-bottom: 8px; }
h3 { font-size: 14px; margin: 14px 0 6px; }
p.how { color: var(--muted); margin: 4px 0 10px; max-width: 980px; }
p.note { background: #fff8c5; border: 1px solid #d4a72c55; padding: 6px 10px;
  border-radius: 4px; display: inline-block; }
.glance { background: var(--bg); border: 1px solid var(--line);
  border-radius: 6px; padding: 10px 16px; }
.glance li { margin: 3px 0; }
.big { font-size: 28px; font-weight: 650; margin-right: 10px; }
table { border-collapse: collapse; font-size: 13px; margin: 6px 0; }
th, td { border: 1px solid var(--line); padding: 3px 8px; text-align: right; }
th { background: var(--bg); }
td.name, th.name { text-align: left; }
table.sortable th { cursor: pointer; user-select: none; }
table.sortable th::after { content: " \\2195"; color: #afb8c1; }
td .bar { display: inline-block; height: 9px; background: var(--accent);
  vertical-align: middle; margin-right: 6px; border-radius: 2px; }
td.low { color: var(--bad); font-weight: 600; }
td.high { color: var(--good); font-weight: 600; }
table.heat td { min-width: 44px; text-align: center; }
table.heat td.diag { outline: 2px solid #1f2937; outline-offset: -2px; }
.grid { display: flex; flex-wrap: wrap; gap: 10px 14px;
  align-items: flex-start; }
.gallery { display: grid; grid-template-columns: repeat(auto-fill,
  minmax(520px, 1fr)); gap: 14px; }
figure.shot { margin: 0; border: 1px solid var(--line); border-radius: 6px;
  padding: 6px; background: #fff; }
figure.shot img { width: 100%; height: auto; display: block; }
figure.shot figcaption { font-size: 12px; color: var(--muted);
  margin-top: 4px; }
figure.shot figcaption b { color: var(--ink); }
.swatch { display: inline-block; width: 12px; height: 12px;
  vertical-align: -2px; margin: 0 4px 0 10px; border-radius: 2px; }
footer { color: var(--muted); font-size: 12px; margin-top: 30px; }
"""

# Click a header: sort the body rows by that column's data-value (numbers
# numerically, missing values last), again to reverse.
SCRIPT = """
document.querySelectorAll('table.sortable').forEach(function (table) {
  table.querySelectorAll('thead th').forEach(function (th, col) {
    th.addEventListener('click', function () {
      var body = table.tBodies[0];
      var rows = Array.prototype.slice.call(body.rows);
      var down = th.getAttribute('data-sorted') !== 'down';
      var key = function (row) {
        var v = row.cells[col].getAttribute('data-value');
        var n = parseFloat(v);
        return isNaN(n) ? v : n;
      };
      rows.sort(function (a, b) {
        var x = key(a), y = key(b);
        if (typeof x !== typeof y) { return typeof x === 'number' ? -1 : 1; }
        var c = typeof x === 'number' ? x - y : String(x).localeCompare(y);
        return down ? -c : c;
      });
      table.querySelectorAll('thead th').forEach(function (other) {
        other.removeAttribute('data-sorted');
      });
      th.setAttribute('data-sorted', down ? 'down' : 'up');
      rows.forEach(function (row) { body.appendChild(row); });
    });
  });
});
"""


def num(value, digits=3):
    """A number for the page; an em dash for nan/None."""
    if value is None or (isinstance(value, float)
                         and not math.isfinite(value)):
        return '\u2014'
    if isinstance(value, int):
        return str(value)
    return f'{value:.{digits}f}'


def cell(value, digits=3, css='', bar=None):
    """A ``<td>`` holding ``value`` with ``data-value`` for sorting; ``bar``
    (0..1) adds an inline bar before the number."""
    raw = '' if value is None or (isinstance(value, float)
                                  and not math.isfinite(value)) else value
    cls = f' class="{css}"' if css else ''
    shown = escape(value) if isinstance(value, str) else num(value, digits)
    if bar is not None and raw != '':
        shown = (f'<span class="bar" style="width:{max(0, bar) * 70:.0f}px">'
                 f'</span>{shown}')
    return f'<td{cls} data-value="{escape(str(raw))}">{shown}</td>'


def table(headers, rows, table_id, sortable=False, css=''):
    """``rows``: lists of ready ``<td>`` strings."""
    classes = ' '.join(c for c in (css, 'sortable' if sortable else '') if c)
    head = ''.join(f'<th class="name">{escape(h)}</th>' if i == 0 else
                   f'<th>{escape(h)}</th>' for i, h in enumerate(headers))
    body = ''.join('<tr>' + ''.join(r) + '</tr>' for r in rows)
    return (f'<table id="{table_id}" class="{classes}"><thead><tr>{head}'
            f'</tr></thead><tbody>{body}</tbody></table>')


def section(section_id, title, how, body):
    """A page section: heading, a sentence on how to read it, content."""
    how = f'<p class="how">{how}</p>' if how else ''
    return (f'<section id="{section_id}"><h2>{escape(title)}</h2>{how}'
            f'{body}</section>')


def note(text):
    return f'<p class="note">{escape(text)}</p>'


def page(title, meta, nav, sections, footer):
    """The whole document. ``meta``: ``[(label, value), ...]`` for the
    header; ``nav``: ``[(section id, label), ...]``."""
    meta_html = ' '.join(f'<span><b>{escape(k)}:</b> {escape(str(v))}</span>'
                         for k, v in meta)
    nav_html = ''.join(f'<a href="#{i}">{escape(label)}</a>'
                       for i, label in nav)
    return ('<!DOCTYPE html><html lang="en"><head><meta charset="utf-8">'
            '<meta name="viewport" content="width=device-width, '
            'initial-scale=1"><link rel="icon" href="data:,">'
            f'<title>{escape(title)}</title><style>{CSS}</style></head>'
            f'<body><header class="top"><h1>{escape(title)}</h1>'
            f'<div class="meta">{meta_html}</div></header>'
            f'<nav>{nav_html}</nav><main>{"".join(sections)}'
            f'<footer>{footer}</footer></main>'
            f'<script>{SCRIPT}</script></body></html>')
