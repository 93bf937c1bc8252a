"""Engines: who schedules the harvest's shards and the correlation reduce's row blocks.

settings.py (EngineSettings, torch-free), local.py (plain loops in this process: the default and
the reference), ray_engine.py (Ray actors and tasks; Ray is an optional extra, imported lazily),
worker.py (what runs on a remote worker), base.py (the ``Engine`` protocol; ``open_engine`` picks
one from its settings).
"""
