"""lskd: label smoothing and knowledge distillation, for fairseq and for vision.

Importing this package (or ``lskd_fairseq.losses`` / ``lskd_fairseq.metrics``)
does not import fairseq. ``fairseq-train --user-dir lskd_fairseq`` registers the
task, criteria and checkpoint-loading support through the ``tasks/`` folder,
which fairseq imports by itself for a user dir.
"""

__version__ = "0.1.0"
