"""The evaluation report: one self-contained HTML page per evaluation
(``tools/analysis_tools/report.py``, ``tools/test.py --report``,
:class:`~detkit.engine.hooks.ReportHook`)."""
from .builder import (MAX_GALLERY, build_report, describe_dataset,
                      write_report)
from .training import find_scalars, load_scalars

__all__ = [
    'build_report', 'write_report', 'describe_dataset', 'find_scalars',
    'load_scalars', 'MAX_GALLERY'
]
