"""The bundle contract: schema version, part files, required parts and columns (docs/architecture.md)."""

from __future__ import annotations

from pathlib import Path

SCHEMA_VERSION = 1


MANIFEST = "manifest.json"


BUNDLE_KIND = "featurebridge-comparison"


# part name -> files that make it up (a part is present only when all its files are)
PART_FILES: dict[str, tuple[str, ...]] = {
    "units": ("units.parquet",),
    "docs": ("docs.parquet",),
    "codes": ("codes_a.safetensors", "codes_b.safetensors"),
    "decoders": ("decoder_a.safetensors", "decoder_b.safetensors"),
    "features": ("features_a.parquet", "features_b.parquet"),
    "matches": ("matches.parquet",),
    "weight_matches": ("weight_matches.parquet",),
    "assignment": ("assignment.parquet",),
    "feature_tokens": ("feature_tokens_a.parquet", "feature_tokens_b.parquet"),
    "similarity": ("similarity.json",),
    "examples": ("examples_a.parquet", "examples_b.parquet"),
    "dashboards": ("dashboards_a.parquet", "dashboards_b.parquet"),
    "umap": ("umap_a.parquet", "umap_b.parquet"),
    # crosscoder bundles: per-latent norms, cosines and Latent Scaling sums (written with the harvest)
    "crosscoder": ("crosscoder_latents.parquet",),
    # the analyses stage of a crosscoder bundle: tags, Delta-norm, betas; and its summary
    "analyses": ("analyses.parquet", "analyses.json"),
    # the causal check (crosscoder latents or SAE pairs): equivalence, p-value and both shift vectors
    "causal": ("causal.parquet",),
}


REQUIRED_PARTS = ("units", "docs", "codes", "decoders", "features")


# files the app owns inside a bundle folder: not parts (no stage writes them, the manifest does not
# list them, so saving one does not invalidate cached reads); a rebuild with --overwrite removes them
LISTS_FILE = "lists.json"
LISTS_LOCK = ".lists.json.lock"
APP_FILES = (LISTS_FILE, LISTS_LOCK)


# work folders a build may leave behind and resume from; never mistaken for user files
WORK_DIRS = (".work",)


UNITS_COLUMNS = ("unit", "doc", "pos", "text", "char_start", "char_end")


FEATURE_COLUMNS = ("feature", "freq", "mean", "std", "max", "is_dead", "is_dense", "top_tokens", "is_nonconcept")


def _present_parts(path: Path) -> dict[str, bool]:
    return {part: all((path / f).is_file() for f in files) for part, files in PART_FILES.items()}
