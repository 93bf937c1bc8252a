"""Settings of the similarity stage and the names it accepts."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

from core.errors import SpecError
from core.spaces.concepts import CONCEPT_MATCH

METRICS = ("svcca", "svcca_paper", "rsa", "cka", "procrustes")


# matched_corr needs the pairing's activation correlations, so only the bundle stage has it
BUNDLE_METRICS = (*METRICS, "matched_corr")


NULL_KINDS = ("permutation", "random_subset")


CORRECTIONS = ("bh", "bonferroni")


NULL_DTYPES = ("float32", "float64")


SVCCA_RULES = ("variance", "paper")


SIMILARITY_SCHEMA = 1


@dataclass(frozen=True)
class SimilaritySettings:
    """What the similarity stage computes, and how hard it tries.

    Attributes:
        metrics: subset of ``svcca``, ``svcca_paper``, ``rsa``, ``cka``, ``procrustes``,
            ``matched_corr`` (the last only in the bundle stage).
        n_null: permutation null samples per metric (0 skips the null).
        seed: seed of every random draw (permutations, subsets, bootstrap).
        variance: variance fraction SVCCA keeps on each side, in (0, 1].
        nulls: null kinds, ``permutation`` (always first) and optionally ``random_subset``
            (random features of the whole dictionaries; recomputes everything per sample).
        n_null_subset: samples of the random-subset null.
        n_boot: document bootstrap draws for the matched correlation's interval (0: none).
        n_boot_metrics: document bootstrap draws for the decoder metrics' intervals (0: none;
            each draw recomputes the metrics on the pairs still above ``boot_min_corr``).
        boot_min_corr: a pair stays in a metrics bootstrap draw while its resampled
            activation correlation exceeds this.
        ci_level: coverage of bootstrap intervals.
        rsa_max_pairs: RSA (an n x n matrix per side) uses a seeded random subset of at most
            this many pairs.
        concepts: compute concept subspaces in the bundle stage.
        concepts_path: keyword-group JSON; ``None`` uses ``assets/concepts.json``.
        concept_match: ``either``, ``both``, ``a`` or ``b``: whose top tokens must hit a keyword.
        concept_top_n: top tokens looked at per feature.
        min_concept_pairs: concepts with fewer pairs are reported but not tested.
        n_null_concepts: null samples per concept (permutation and subspace nulls).
        correction: multiplicity correction behind ``significant`` (``bh`` or ``bonferroni``;
            both adjusted p-values are always reported).
        alpha: significance level for ``significant``.
        null_dtype: float precision of null samples (observed values are always float64).
        chunk: permutations computed per batched product (memory vs speed).
    """

    metrics: tuple[str, ...] = BUNDLE_METRICS
    n_null: int = 1000
    seed: int = 0
    variance: float = 0.99
    nulls: tuple[str, ...] = ("permutation",)
    n_null_subset: int = 100
    n_boot: int = 1000
    n_boot_metrics: int = 0
    boot_min_corr: float = 0.1
    ci_level: float = 0.95
    rsa_max_pairs: int = 6000
    concepts: bool = True
    concepts_path: str | None = None
    concept_match: str = "either"
    concept_top_n: int = 5
    min_concept_pairs: int = 5
    n_null_concepts: int = 200
    correction: str = "bh"
    alpha: float = 0.05
    null_dtype: str = "float32"
    chunk: int = 8

    def __post_init__(self) -> None:
        for name in ("metrics", "nulls"):
            value = getattr(self, name)
            if isinstance(value, str):
                value = (value,)
            object.__setattr__(self, name, tuple(value))
        bad = [m for m in self.metrics if m not in BUNDLE_METRICS]
        if bad or not self.metrics:
            raise SpecError(
                f"Unknown similarity metric {bad[0] if bad else '(none)'!r}; choose from {', '.join(BUNDLE_METRICS)}."
            )
        bad = [k for k in self.nulls if k not in NULL_KINDS]
        if bad or "permutation" not in self.nulls:
            raise SpecError(
                f"Null kinds {list(self.nulls)} are not allowed; choose from {', '.join(NULL_KINDS)} "
                "and include 'permutation'."
            )
        for name in ("n_null", "n_null_subset", "n_boot", "n_boot_metrics", "n_null_concepts"):
            if int(getattr(self, name)) < 0:
                raise SpecError(f"{name} must be 0 or more, got {getattr(self, name)}; pass a non-negative count.")
        if not 0.0 < self.variance <= 1.0:
            raise SpecError(f"variance must lie in (0, 1], got {self.variance}; 0.99 is the usual choice.")
        if not 0.0 < self.ci_level < 1.0:
            raise SpecError(f"ci_level must lie in (0, 1), got {self.ci_level}; 0.95 is the usual choice.")
        if not 0.0 < self.alpha < 1.0:
            raise SpecError(f"alpha must lie in (0, 1), got {self.alpha}; 0.05 is the usual choice.")
        if self.rsa_max_pairs < 3:
            raise SpecError(f"rsa_max_pairs must be at least 3, got {self.rsa_max_pairs}.")
        if self.concept_match not in CONCEPT_MATCH:
            raise SpecError(
                f"concept_match {self.concept_match!r} is unknown; choose one of {', '.join(CONCEPT_MATCH)}."
            )
        if self.concept_top_n < 1 or self.min_concept_pairs < 3:
            raise SpecError("concept_top_n must be at least 1 and min_concept_pairs at least 3; raise them.")
        if self.correction not in CORRECTIONS:
            raise SpecError(f"correction {self.correction!r} is unknown; choose one of {', '.join(CORRECTIONS)}.")
        if self.null_dtype not in NULL_DTYPES:
            raise SpecError(f"null_dtype {self.null_dtype!r} is unknown; choose one of {', '.join(NULL_DTYPES)}.")
        if self.chunk < 1:
            raise SpecError(f"chunk must be at least 1, got {self.chunk}.")

    @property
    def decoder_metrics(self) -> tuple[str, ...]:
        """The requested metrics that are computed on decoder rows (all but ``matched_corr``)."""
        return tuple(m for m in self.metrics if m in METRICS)

    def to_dict(self) -> dict[str, Any]:
        """The settings as a JSON-ready dict, tuples as lists (what the manifest records)."""
        return {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(self).items()}
