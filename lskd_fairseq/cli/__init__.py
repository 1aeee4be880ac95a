"""Console scripts of lskd (see setup.py's entry points)."""
