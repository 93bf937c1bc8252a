"""Settings of the UMAP stage and the relation sources it accepts."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

from core.errors import SpecError

RELATION_SOURCES = ("assignment", "mutual", "none")
LAYOUT_METHODS = ("umap", "pca")


UMAP_COLUMNS = ("feature", "x", "y")


@dataclass(frozen=True)
class UMAPSettings:
    """How the decoder maps are computed (hashable; validated on creation).

    Attributes:
        n_neighbors: UMAP neighbourhood size (clipped to the number of features - 1).
        min_dist: UMAP minimum distance between embedded points.
        n_epochs: optimisation epochs (``None``: umap-learn's default for the size).
        aligned: fit AlignedUMAP through the relation (when one exists), else two UMAPs.
        relation: where A<->B correspondences come from: ``assignment`` (kept pairs of
            assignment.parquet), ``mutual`` (mutual best matches of matches.parquet) or ``none``.
        alignment_regularisation: AlignedUMAP's pull between related points.
        seed: random state (a fixed seed also makes umap-learn single-threaded, hence reproducible).
        method: ``umap`` (default), or ``pca``: a linear preview in seconds (each side's top two
            principal directions, B rotated onto A through the relation), for dictionaries where
            UMAP takes too long and for quick looks.
    """

    n_neighbors: int = 15
    min_dist: float = 0.1
    n_epochs: int | None = None
    aligned: bool = True
    relation: str = "assignment"
    alignment_regularisation: float = 0.01
    seed: int = 0
    method: str = "umap"

    def __post_init__(self) -> None:
        if not isinstance(self.n_neighbors, int) or self.n_neighbors < 2:
            raise SpecError(f"UMAP n_neighbors must be an integer >= 2, got {self.n_neighbors!r}.")
        if not 0.0 <= self.min_dist <= 1.0:
            raise SpecError(f"UMAP min_dist must lie in [0, 1], got {self.min_dist!r}.")
        if self.n_epochs is not None and (not isinstance(self.n_epochs, int) or self.n_epochs < 1):
            raise SpecError(f"UMAP n_epochs must be None or a positive integer, got {self.n_epochs!r}.")
        if self.relation not in RELATION_SOURCES:
            raise SpecError(f"UMAP relation {self.relation!r} is unknown; choose one of {', '.join(RELATION_SOURCES)}.")
        if self.method not in LAYOUT_METHODS:
            raise SpecError(f"Map layout method {self.method!r} is unknown; choose one of {', '.join(LAYOUT_METHODS)}.")
        if self.alignment_regularisation < 0:
            raise SpecError("UMAP alignment_regularisation must be >= 0.")

    def to_dict(self) -> dict[str, Any]:
        """The settings as a JSON-ready dict (what the manifest records)."""
        return asdict(self)
