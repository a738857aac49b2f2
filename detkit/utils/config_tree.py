"""Checking a whole config tree: which configs, and the result table."""
import glob
import os
import os.path as osp
from typing import List, Optional, Sequence

from .config_check import CheckResult, check_config
from .key_lists import key_list_for

# The method folders detkit supports, in mmdetection's config tree.
DEFAULT_FOLDERS = ('retinanet', 'ssd', 'rpn', 'faster_rcnn', 'fcos', 'atss')
# Folders of a config tree that hold pieces, not whole configs.
FRAGMENT_FOLDERS = ('_base_', 'common')


def find_configs(root: str,
                 folders: Optional[Sequence[str]] = None) -> List[str]:
    """Whole config files under ``root`` (paths relative to it, sorted).

    ``folders`` picks method folders of a config tree; by default the four
    detkit supports when ``root`` has them, else every folder. Files under
    ``_base_/`` and ``common/`` are pieces, never listed.
    """
    if osp.isfile(root):
        return [osp.basename(root)]
    if folders is None:
        present = [f for f in DEFAULT_FOLDERS if osp.isdir(osp.join(root, f))]
        folders = present or None
    patterns = ([osp.join(root, f, '**', '*.py') for f in folders]
                if folders else [osp.join(root, '**', '*.py')])
    found = set()
    for pattern in patterns:
        for path in glob.glob(pattern, recursive=True):
            rel = osp.relpath(path, root)
            if rel.split(os.sep)[0] not in FRAGMENT_FOLDERS:
                found.add(rel)
    return sorted(found)


# How a refused config's ``skipped`` reason starts.
REFUSED = 'refused: '


def mark_refused(result: CheckResult) -> CheckResult:
    """A config whose model detkit refuses by design (its builder raises
    ``NotImplementedError``: a component that needs compiled ops, such as
    DCN) is reported as refused with that reason, not as a failure; it
    then counts as skipped (``result.skipped`` starts with
    :data:`REFUSED`). Returns ``result``."""
    stages = {stage for stage, _ in result.failures}
    prefix = 'NotImplementedError: '
    if stages == {'model'} and result.failures[0][1].startswith(prefix):
        result.skipped = REFUSED + result.failures[0][1][len(prefix):]
        result.failures.clear()
    return result


def is_refused(result: CheckResult) -> bool:
    return bool(result.skipped) and result.skipped.startswith(REFUSED)


def check_tree(root: str,
               folders: Optional[Sequence[str]] = None,
               compat_dir: Optional[str] = None) -> List[CheckResult]:
    """:func:`check_config` for every config :func:`find_configs` lists,
    refused ones marked (:func:`mark_refused`)."""
    if osp.isfile(root):
        return [mark_refused(check_config(root, None, osp.basename(root)))]
    return [
        mark_refused(check_config(osp.join(root, rel),
                                  key_list_for(compat_dir, rel), rel))
        for rel in find_configs(root, folders)
    ]


def format_table(results: Sequence[CheckResult]) -> str:
    """A plain-text table: config, result, model keys, reason."""
    rows = [('config', 'result', 'keys', 'reason')]
    for r in results:
        status = ('refused' if is_refused(r) else 'skipped' if r.skipped
                  else 'builds' if r.ok else 'FAILS')
        keys = '' if r.num_keys is None else str(r.num_keys)
        if r.num_keys is not None and r.key_list is not None:
            differ = any(stage == 'keys' for stage, _ in r.failures)
            keys += ' (differ)' if differ else ' (match)'
        reason = r.skipped[len(REFUSED):] if is_refused(r) else r.reason
        rows.append((r.config, status, keys, reason))
    widths = [max(len(row[i]) for row in rows) for i in range(3)]
    lines = []
    for num, row in enumerate(rows):
        lines.append('  '.join(cell.ljust(w)
                               for cell, w in zip(row[:3], widths)) + '  ' +
                     row[3])
        if num == 0:
            lines.append('  '.join('-' * w for w in widths) + '  ' + '-' * 6)
    checked = [r for r in results if not r.skipped]
    refused = sum(is_refused(r) for r in results)
    skipped = len(results) - len(checked) - refused
    ok = sum(r.ok for r in checked)
    no_list = sum(any(n.startswith('no key list') for n in r.notes)
                  for r in checked)
    lines.append(f'{ok} of {len(checked)} configs build'
                 + (' and match their key lists'
                    if no_list or any(r.key_list for r in checked) else '')
                 + f'; {len(checked) - ok} fail'
                 + (f'; {no_list} without a key list' if no_list else '')
                 + (f'; {refused} refused' if refused else '')
                 + (f'; {skipped} skipped' if skipped else ''))
    return '\n'.join(line.rstrip() for line in lines)
