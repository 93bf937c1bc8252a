"""The command line, ``python -m core`` / ``featurebridge``: a thin layer over the Python API."""
