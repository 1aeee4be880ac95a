"""Console scripts of lskd_study: lskd-study, lskd-stability, lskd-plot."""
