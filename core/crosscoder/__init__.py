"""Model diffing with crosscoders: one dictionary read from both models' activations.

settings.py (specs and settings, torch-free), checkpoint.py (both public layouts, never
unpickled), model.py (encode, decode, input scaling), harvest.py (the harvest seam: both
models' activations, one code), bundle.py (a crosscoder as a comparison bundle), taxonomy.py
(tags and Latent Scaling from per-latent sums, torch-free), stage.py (the analyses stage),
causal.py (ablate a latent in both models, correlate the output shifts; SAE pairs too).
"""
