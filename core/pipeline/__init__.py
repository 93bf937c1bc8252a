"""The whole run: harvest then every later stage, into one bundle.

compare.py (``build_comparison``), stages.py (the later stages in order), sweep.py (layer x
layer sweeps, one forward per model for all its SAEs).
"""
