"""Stage 4, dashboards: per-feature examples, histograms, top tokens and logit effects.

settings.py (settings, part columns), compute.py + kernels.py (one streamed pass per side),
logits.py (logit effects for causal LMs), read.py (torch-free readers), stage.py
(``build_dashboards``).
"""
