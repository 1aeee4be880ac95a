"""lskd: label smoothing and knowledge distillation, for fairseq and for vision.

Importing this package (or ``lskd_fairseq.losses`` / ``lskd_fairseq.metrics``)
does not import fairseq. ``fairseq-train --user-dir lskd_fairseq`` registers the
task, criteria and checkpoint-loading support through the ``tasks/`` folder,
which fairseq imports by itself for a user dir.
"""

__version__ = "0.1.0"


def _quiet_library_warnings() -> None:
    """In a process lskd started (``warning_filters.subprocess_env``): the named filters."""
    import os

    if os.environ.get("LSKD_QUIET_LIBRARY_WARNINGS") == "1":
        from lskd_fairseq.warning_filters import silence_known_warnings

        silence_known_warnings()


_quiet_library_warnings()
