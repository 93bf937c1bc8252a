"""The embedded demos, built from models and text that PyPI packages ship.

settings.py (what a demo is), train.py (SAEs by our recipe, sae-lens's SAETrainer), spine.py
(MiniLM-L6 vs MiniLM-L3), sweep.py (its 3 x 3 layer sweep), family.py (MiniLM-L6 vs SmolLM2).
"""
