"""Stage 2, matching: which features correspond, and the evidence on every pair.

settings.py (MatchSettings and the presets), moments.py + correlate.py + kernels.py (exact all-pairs
Pearson top-k), weights.py (decoder cosine), significance.py (document-stratified test), assign.py
(pairings, splits, orphans), filters.py (why a pair is dropped), labels.py (feature label lists),
presets.py (the featurebridge and paper pipelines), evidence.py (top tokens, overlap, combined
score), explain.py (one pair's evidence), stage.py (``build_matching``).
"""
