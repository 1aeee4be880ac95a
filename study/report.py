"""The study's report: collect the measurements, draw the figures, decide the verdicts, render.

* ``collect.py``        - what the runs left, the stability analysis, the study's accounts of time
* ``report_figures.py`` - the figures (none drawn without data)
* ``verdicts.py``       - one function per claim, driven by its table of claims (``stats.py``: the tests)
* ``render.py``         - report.md

``write_report(study)`` writes ``OUT/report.md`` and returns its path, or None when no
model has finished: a report of nothing, with empty figures, would look like a result.
"""

import os
from typing import Optional

from lskd_fairseq.atomic import atomic_write_text

from . import collect, render, report_figures, verdicts


def write_report(study) -> Optional[str]:
    d = collect.collect(study)
    path = os.path.join(study.out, "report.md")
    if not render.any_model(d):
        for name in report_figures.FIGURES.values():  # nothing stale from an earlier report either
            if os.path.isfile(os.path.join(study.out, name)):
                os.remove(os.path.join(study.out, name))
        if os.path.isfile(path):
            os.remove(path)
        return None
    figs = report_figures.make_figures(study, d)
    rows = verdicts.claims(study, d)
    atomic_write_text(path, render.render(study, d, rows, figs))
    return path
