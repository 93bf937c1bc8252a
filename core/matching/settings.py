"""Settings of the matching stage and the pairing methods it offers (torch-free: the app's build form and the manifest use it)."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

from core.errors import SpecError

ASSIGN_METHODS = ("many_to_1_ab", "many_to_1_ba", "mutual", "greedy", "hungarian", "sparse")


@dataclass(frozen=True)
class MatchSettings:
    """Settings of the matching stage (hashable; validated on creation).

    Attributes:
        top_k: partners kept per feature in each direction (matches.parquet).
        min_corr: correlation a pair must exceed to be kept (the paper's 0.1).
        method: the pairing written to assignment.parquet, one of ``ASSIGN_METHODS``.
        memory_mb: bound on the dense block of pairs held at once (and on a kept dense matrix).
        chunk_units: units streamed per chunk.
        nonconcept_top_n: how many top tokens of each feature the non-concept filter checks.
        nonconcept_file: the token list (None: ``assets/nonconcept_tokens.txt``).
        require_shared_token: also drop pairs whose top tokens are disjoint.
        max_freq: firing frequency from which a feature is always-on (dropped).
        sig_candidates: partners per A feature tested for significance (top by r).
        alpha: q-value at which a match is called significant.
        require_significant: also drop assigned pairs with q above ``alpha``.
        split_min_corr: correlation a partner needs to count towards a split.
        hungarian_max: largest side for which the dense Hungarian pairing is computed.
        unmatched_value: the sparse 1-1 method's value of leaving a feature unmatched
            (None: ``min_corr``).
    """

    top_k: int = 10
    min_corr: float = 0.1
    method: str = "greedy"
    memory_mb: float = 1024.0
    chunk_units: int = 1 << 20
    nonconcept_top_n: int = 5
    nonconcept_file: str | None = None
    require_shared_token: bool = False
    max_freq: float = 0.5
    sig_candidates: int = 10
    alpha: float = 0.05
    require_significant: bool = False
    split_min_corr: float = 0.3
    hungarian_max: int = 6000
    unmatched_value: float | None = None

    def __post_init__(self) -> None:
        def need(ok: bool, what: str) -> None:
            if not ok:
                raise SpecError(f"Matching setting {what}; change it and run again.")

        need(isinstance(self.top_k, int) and self.top_k >= 1, f"top_k={self.top_k!r} must be an integer >= 1")
        need(-1.0 <= self.min_corr < 1.0, f"min_corr={self.min_corr!r} must lie in [-1, 1)")
        need(self.method in ASSIGN_METHODS, f"method={self.method!r} must be one of {', '.join(ASSIGN_METHODS)}")
        need(self.memory_mb > 0, f"memory_mb={self.memory_mb!r} must be positive")
        need(isinstance(self.chunk_units, int) and self.chunk_units >= 1, "chunk_units must be an integer >= 1")
        need(
            isinstance(self.nonconcept_top_n, int) and self.nonconcept_top_n >= 0,
            "nonconcept_top_n must be an integer >= 0",
        )
        need(0.0 < self.max_freq <= 1.0, f"max_freq={self.max_freq!r} must lie in (0, 1]")
        need(
            isinstance(self.sig_candidates, int) and self.sig_candidates >= 1, "sig_candidates must be an integer >= 1"
        )
        need(0.0 < self.alpha < 1.0, f"alpha={self.alpha!r} must lie in (0, 1)")
        need(-1.0 <= self.split_min_corr < 1.0, f"split_min_corr={self.split_min_corr!r} must lie in [-1, 1)")
        need(isinstance(self.hungarian_max, int) and self.hungarian_max >= 0, "hungarian_max must be an integer >= 0")
        need(
            self.unmatched_value is None or -1.0 <= self.unmatched_value <= 1.0,
            f"unmatched_value={self.unmatched_value!r} must be None or lie in [-1, 1]",
        )

    @property
    def sparse_unmatched_value(self) -> float:
        """The sparse 1-1 method's value of an unmatched feature (``unmatched_value`` or ``min_corr``)."""
        return self.min_corr if self.unmatched_value is None else float(self.unmatched_value)

    def to_dict(self) -> dict[str, Any]:
        """The settings as a JSON-ready dict (what the manifest records)."""
        return asdict(self)
