"""Which inputs each derived part was built from, and which parts are stale now.

A stage whose output depends on another part's content records, in its manifest section,
``built_from``: bundle file name -> ``"sha256:<hex>"`` of that file as the stage read it
(the similarity stage: ``assignment.parquet``; the UMAP stage: the file its relation came
from). :func:`stale_parts` compares those digests with the files on disk now, so a
``python -m core match`` that rewrites the assignment marks similarity and the UMAP stale
until they are rebuilt, in the CLI (``info``, ``match``) and in the app alike. Bundles
written before this record existed are judged by what their manifests did record (the
similarity stage's pair count and an aligned UMAP's relation count against the kept pairs now).
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import polars as pl

from core.bundle.reader import Bundle

DIGEST_PREFIX = "sha256:"

# manifest section -> the command that rebuilds it (BUNDLE is replaced by the bundle path)
REBUILD_COMMANDS: dict[str, str] = {
    "similarity": "python -m core similarity BUNDLE",
    "umap": "python -m core umap BUNDLE",
    "dashboards": "python -m core dashboards BUNDLE",
    "matching": "python -m core match BUNDLE",
}

# manifest section -> the part it writes (what the app checks with Bundle.has)
SECTION_PARTS: dict[str, str] = {"similarity": "similarity", "umap": "umap", "dashboards": "dashboards"}


def file_digest(path: str | Path) -> str:
    """``"sha256:<hex>"`` of a file's bytes (read in 1 MiB blocks)."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return DIGEST_PREFIX + digest.hexdigest()


def input_digests(bundle_path: str | Path, files: Iterable[str]) -> dict[str, str]:
    """The ``built_from`` record of a stage: file name -> digest, for the files that exist.

    Args:
        bundle_path: the bundle folder.
        files: bundle file names the stage reads (for example ``["assignment.parquet"]``).

    Returns:
        file name -> ``"sha256:<hex>"``; absent files are left out.
    """
    folder = Path(bundle_path)
    return {name: file_digest(folder / name) for name in files if (folder / name).is_file()}


@dataclass(frozen=True)
class StalePart:
    """A derived part whose inputs changed after it was built.

    Attributes:
        section: the manifest section (``similarity``, ``umap``, ...).
        part: the part it wrote (for ``Bundle.has``).
        changed: the input files that differ from what the part was built from.
        reason: one sentence for the user.
        command: the command that rebuilds it, with the bundle path filled in.
    """

    section: str
    part: str
    changed: tuple[str, ...]
    reason: str
    command: str


def _kept_relations(bundle: Bundle) -> int | None:
    """How many A -> B relations an aligned UMAP would take from the kept pairs now.

    The same one-per-side reduction as ``core.embedding.stage.load_relation`` (strongest first,
    one B per A, then one A per B), for bundles whose UMAP record predates ``built_from``.
    """
    if not bundle.has("assignment"):
        return None
    frame = bundle.assignment()
    if "kept" in frame.collect_schema().names():
        frame = frame.filter(pl.col("kept").fill_null(False))
    reduced = (
        frame.select("feature_a", "feature_b", "corr")
        .sort("corr", descending=True, nulls_last=True)
        .unique("feature_a", keep="first", maintain_order=True)
        .unique("feature_b", keep="first", maintain_order=True)
    )
    return int(reduced.select(pl.len()).collect().item())


def _kept_pairs(bundle: Bundle) -> int | None:
    if not bundle.has("assignment"):
        return None
    frame = bundle.assignment()
    if "kept" in frame.collect_schema().names():
        frame = frame.filter(pl.col("kept").fill_null(False))
    return int(frame.select(pl.len()).collect().item())


def stale_parts(bundle: Bundle) -> list[StalePart]:
    """The bundle's derived parts that no longer match their inputs.

    Args:
        bundle: an opened bundle.

    Returns:
        One :class:`StalePart` per stale part, in manifest order (empty when all agree).
    """
    out: list[StalePart] = []
    for section, record in bundle.manifest.items():
        if not isinstance(record, dict) or section not in SECTION_PARTS:
            continue
        part = SECTION_PARTS[section]
        if not bundle.has(part):
            continue
        command = REBUILD_COMMANDS[section].replace("BUNDLE", str(bundle.path))
        built_from = record.get("built_from")
        if isinstance(built_from, dict):
            changed = tuple(
                name
                for name, digest in built_from.items()
                if not (bundle.path / name).is_file() or file_digest(bundle.path / name) != digest
            )
            if changed:
                out.append(
                    StalePart(
                        section,
                        part,
                        changed,
                        f"{part} was built from another {', '.join(changed)} than the bundle holds now",
                        command,
                    )
                )
        elif (
            section == "umap"
            and record.get("aligned")
            and (record.get("settings") or {}).get("relation", "assignment") == "assignment"
            and record.get("n_relations") is not None
        ):
            # written before built_from existed: the relation count is what the manifest kept
            now = _kept_relations(bundle)
            if now is not None and now != int(record["n_relations"]):
                out.append(
                    StalePart(
                        section,
                        part,
                        ("assignment.parquet",),
                        f"the maps were aligned through {record['n_relations']:,} pairs but the assignment gives "
                        f"{now:,} now",
                        command,
                    )
                )
        elif section == "similarity" and record.get("n_pairs") is not None:
            # written before built_from existed: the pair count is all the manifest kept
            kept = _kept_pairs(bundle)
            if kept is not None and kept != int(record["n_pairs"]):
                out.append(
                    StalePart(
                        section,
                        part,
                        ("assignment.parquet",),
                        f"similarity was computed on {record['n_pairs']:,} pairs but the assignment keeps {kept:,} now",
                        command,
                    )
                )
    return out
