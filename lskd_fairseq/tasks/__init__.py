"""Registers lskd's fairseq components.

fairseq imports this folder for ``--user-dir lskd_fairseq``; tools import it
directly (``import lskd_fairseq.tasks``). Loading it also applies the fairseq
compatibility fixes in ``lskd_fairseq.fairseq_compat`` and registers the criteria.
"""

from lskd_fairseq import fairseq_compat

fairseq_compat.apply()

import lskd_fairseq.criterions  # noqa: E402,F401  (registers the criteria)
from lskd_fairseq.tasks import translation_kd  # noqa: E402,F401
