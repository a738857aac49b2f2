"""Plain-text tables for metric logs (no third-party table package)."""


def format_table(headers, rows, title=None):
    """Align ``rows`` (sequences of printable cells) under ``headers``::

        +----------+-------+
        | category | mAP   |
        +----------+-------+
        | cat      | 0.637 |
        +----------+-------+
    """
    cells = [[str(c) for c in headers]] + [[str(c) for c in r] for r in rows]
    widths = [max(len(row[i]) for row in cells) for i in range(len(headers))]
    rule = '+' + '+'.join('-' * (w + 2) for w in widths) + '+'

    def line(row):
        return '|' + '|'.join(f' {c:<{w}} ' for c, w in zip(row, widths)) + '|'

    out = [rule, line(cells[0]), rule] + [line(r) for r in cells[1:]] + [rule]
    if title:
        out.insert(0, title)
    return '\n'.join(out)
