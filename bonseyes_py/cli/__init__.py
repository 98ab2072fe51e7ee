"""The ``bonseyes`` command line: a thin adapter over the core."""
