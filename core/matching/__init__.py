"""Stage 2, matching: which features correspond.

settings.py (MatchSettings), moments.py + correlate.py + kernels.py (exact all-pairs Pearson
top-k), weights.py (decoder cosine), significance.py (document-stratified test), assign.py
(pairings, splits, orphans), filters.py (why a pair is dropped), stage.py (``build_matching``).
"""
