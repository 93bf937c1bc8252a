"""The whole run: harvest then every later stage, into one bundle, and the Python front door's functions.

config.py (``ComparisonConfig``: one configuration per run, torch-free), compare.py
(``build_comparison``, ``harvest_into_bundle``), stages.py (the later stages in order),
sweep.py (layer x layer sweeps, one forward per model for all its SAEs), api.py
(``core.compare``, ``core.match_codes``, ``core.similarity``).
"""
