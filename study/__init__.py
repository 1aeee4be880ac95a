"""lskd_study: what spans both domains.

The stability metric (Eq. 2) on vision and fairseq checkpoints, Müller-style
projections, figures, the paper's published numbers, the verdicts, the study
report and the ``lskd-study``, ``lskd-stability`` and ``lskd-plot`` commands.

It may import ``lskd_fairseq`` and ``lskd_vision``; neither imports it.
Importing this package itself does not import fairseq or lskd_vision; the
modules that need them import them inside the functions that do.
"""
