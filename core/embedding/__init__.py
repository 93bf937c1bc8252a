"""Stage 5, embedding: UMAP layouts of both decoders, aligned through the matched pairs.

settings.py (UMAPSettings), layout.py (``DecoderUMAP`` estimator), stage.py (``build_umap``).
"""
