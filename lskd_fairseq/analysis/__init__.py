"""Analysis for lskd: the paper's stability metric on real checkpoints, Müller-style
projections, the figures, the published numbers and the study report.

Importing this package does not import fairseq or lskd_vision; the modules that
need them import them inside the functions that do.
"""
