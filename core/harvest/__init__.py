"""Stage 1, harvest: load models, SAEs and text; run both models over the same units; keep sparse codes.

specs.py (what to load), loading.py (models and SAEs), hooks.py (hook names, capture), corpus.py
(text), windows.py (token windows, shards, batches), align.py (units for two tokenizers),
encode.py (forward to the hook + SAE encode), sanity.py (hook sanity), features.py (per-feature
stats), run.py (the sharded, resumable harvest), vocab.py (a unit in its tokenizer's vocabulary form).
"""
