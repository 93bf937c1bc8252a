"""Stage 3, similarity of the paired feature spaces: SVCCA, RSA, CKA, Procrustes with honest nulls.

settings.py, metrics.py (the metrics), nulls.py + kernels.py (permutation, subset and subspace
nulls), compute.py (metrics with nulls and p-values, concept subspaces), concepts.py (keyword
groups), stats.py (p-values, corrections, document bootstrap), sweep.py (layer x layer grids),
stage.py (``build_similarity`` -> similarity.json). Named "spaces" so that ``core.similarity``
stays the notebook function.
"""
