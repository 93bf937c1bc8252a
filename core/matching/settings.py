"""Settings of the matching stage, its presets and the pairing methods it offers (torch-free: the app's build
form and the manifest use it).

A preset is a named set of every matching setting that decides which pairs are kept:

- ``featurebridge`` (the default, what we recommend): exact r, the non-concept, dead and always-on
  filters, and significance required (q <= 0.05 under the document-stratified test), paired by the
  exact maximum-weight 1-1 method on the top-k candidates (unmatched allowed);
- ``paper``: the published 1-1 pipeline of Lan et al. step by step (best A per B by r; labels =
  decoded tokens of the 5 highest activations, repeats allowed, in the tokenizer's vocabulary form;
  the paper's junk list and the shared-token rule on those labels; greedy de-duplication by ascending
  B id; only then r <= 0.1 dropped; no always-on or significance filter).

Settings a preset does not fix are free: resources (memory, chunks) and settings its pipeline does
not use. ``MatchSettings.preset`` names the preset whose every fixed value the settings hold, or
``"custom"``; :meth:`MatchSettings.from_preset` builds a preset and refuses an override that would
change one of its fixed values.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from typing import Any

from core.errors import SpecError

ASSIGN_METHODS = ("many_to_1_ab", "many_to_1_ba", "mutual", "greedy", "hungarian", "sparse")
# where a feature's label list comes from: the features table's distinct top tokens (surface strings,
# most frequent first), or the units of its n highest activations (repeats allowed)
LABEL_SOURCES = ("top_tokens", "top_activations")
# the text of a unit in a label list: as it stands in the text, or the tokenizer's own vocabulary form
# (``tokenizer.decode([id])``: lower case for an uncased WordPiece, ``##`` kept)
LABEL_FORMS = ("surface", "vocab")
# how two label tokens (and a label token and a listed junk token) are compared: after
# core.tokens.normalize_token, or as exact strings (the paper)
LABEL_MATCHES = ("normalized", "exact")
# the shipped token lists of the non-concept filter (assets/)
NONCONCEPT_LISTS = ("featurebridge", "paper")

PRESETS: dict[str, dict[str, Any]] = {
    "featurebridge": {
        "top_k": 10,
        "method": "sparse",
        "min_corr": 0.1,
        "unmatched_value": None,
        "threshold_after_dedup": False,
        "label_source": "top_tokens",
        "label_form": "surface",
        "label_match": "normalized",
        "fold_case": True,
        "nonconcept_top_n": 5,
        "nonconcept_list": "featurebridge",
        "nonconcept_file": None,
        "filter_always_on": True,
        "max_freq": 0.5,
        "require_significant": True,
        "alpha": 0.05,
    },
    "paper": {
        "method": "greedy",
        "min_corr": 0.1,
        "threshold_after_dedup": True,
        "label_source": "top_activations",
        "label_form": "vocab",
        "label_match": "exact",
        "nonconcept_top_n": 5,
        "nonconcept_list": "paper",
        "nonconcept_file": None,
        "require_shared_token": True,
        "filter_always_on": False,
        "require_significant": False,
    },
}
PRESET_NAMES = (*PRESETS, "custom")
DEFAULT_PRESET = "featurebridge"


@dataclass(frozen=True)
class MatchSettings:
    """Settings of the matching stage (hashable; validated on creation). The defaults are the
    ``featurebridge`` preset.

    Attributes:
        top_k: partners kept per feature in each direction (matches.parquet; the sparse method's candidates).
        min_corr: correlation a pair must exceed to be kept (the paper's 0.1).
        method: the pairing written to assignment.parquet, one of ``ASSIGN_METHODS``.
        memory_mb: bound on the dense block of pairs held at once (and on a kept dense matrix).
        chunk_units: units streamed per chunk.
        nonconcept_top_n: how many label tokens of each feature the non-concept filter checks.
        nonconcept_list: the shipped non-concept token list, one of ``NONCONCEPT_LISTS``.
        nonconcept_file: a token list file of your own instead (None: ``nonconcept_list``).
        require_shared_token: also drop pairs whose label lists share no token.
        label_source: a feature's label list, one of ``LABEL_SOURCES``.
        label_form: the text of a unit in a ``top_activations`` label list, one of ``LABEL_FORMS``.
        label_match: how label tokens are compared, one of ``LABEL_MATCHES``.
        fold_case: with ``label_match="normalized"``, compare label tokens case-folded.
        threshold_after_dedup: apply ``min_corr`` only after the greedy de-duplication (the paper's
            order: a pair below the threshold still claims its A feature); False drops it first.
        filter_always_on: drop pairs with an always-on feature (firing frequency >= ``max_freq``).
        max_freq: firing frequency from which a feature is always-on.
        sig_candidates: partners per A feature tested for significance in matches.parquet (top by r).
        alpha: q-value at which a match is called significant.
        require_significant: also drop assigned pairs with q above ``alpha``.
        split_min_corr: correlation a partner needs to count towards a split.
        hungarian_max: largest side for which the dense Hungarian pairing is computed.
        unmatched_value: the sparse 1-1 method's value of leaving a feature unmatched
            (None: ``min_corr``).
    """

    top_k: int = 10
    min_corr: float = 0.1
    method: str = "sparse"
    memory_mb: float = 1024.0
    chunk_units: int = 1 << 20
    nonconcept_top_n: int = 5
    nonconcept_list: str = "featurebridge"
    nonconcept_file: str | None = None
    require_shared_token: bool = False
    label_source: str = "top_tokens"
    label_form: str = "surface"
    label_match: str = "normalized"
    fold_case: bool = True
    threshold_after_dedup: bool = False
    filter_always_on: bool = True
    max_freq: float = 0.5
    sig_candidates: int = 10
    alpha: float = 0.05
    require_significant: bool = True
    split_min_corr: float = 0.3
    hungarian_max: int = 6000
    unmatched_value: float | None = None

    def __post_init__(self) -> None:
        def need(ok: bool, what: str) -> None:
            if not ok:
                raise SpecError(f"Matching setting {what}; change it and run again.")

        def one_of(name: str, allowed: tuple[str, ...]) -> None:
            value = getattr(self, name)
            need(value in allowed, f"{name}={value!r} must be one of {', '.join(allowed)}")

        need(isinstance(self.top_k, int) and self.top_k >= 1, f"top_k={self.top_k!r} must be an integer >= 1")
        need(-1.0 <= self.min_corr < 1.0, f"min_corr={self.min_corr!r} must lie in [-1, 1)")
        one_of("method", ASSIGN_METHODS)
        need(self.memory_mb > 0, f"memory_mb={self.memory_mb!r} must be positive")
        need(isinstance(self.chunk_units, int) and self.chunk_units >= 1, "chunk_units must be an integer >= 1")
        need(
            isinstance(self.nonconcept_top_n, int) and self.nonconcept_top_n >= 0,
            "nonconcept_top_n must be an integer >= 0",
        )
        one_of("nonconcept_list", NONCONCEPT_LISTS)
        one_of("label_source", LABEL_SOURCES)
        one_of("label_form", LABEL_FORMS)
        one_of("label_match", LABEL_MATCHES)
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
        need(
            not (self.threshold_after_dedup and self.method != "greedy"),
            "threshold_after_dedup=True needs method='greedy' (only the greedy walk has an order to put it in)",
        )

    @classmethod
    def from_preset(cls, name: str, **overrides: Any) -> MatchSettings:
        """A preset's settings with free settings changed.

        Args:
            name: one of ``PRESET_NAMES`` ("custom" starts from the defaults and fixes nothing).
            **overrides: settings to change; a value that contradicts a setting the preset fixes is refused.

        Returns:
            The settings.
        """
        if name not in PRESET_NAMES:
            raise SpecError(f"Unknown matching preset {name!r}; choose one of {', '.join(PRESET_NAMES)}.")
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(overrides) - known)
        if unknown:
            raise SpecError(f"Unknown matching setting {unknown[0]!r}; the settings are {', '.join(sorted(known))}.")
        fixed = PRESETS.get(name, {})
        for key, value in overrides.items():
            if key in fixed and value != fixed[key]:
                raise SpecError(
                    f"Matching setting {key}={value!r} contradicts preset {name!r}, which fixes {key}={fixed[key]!r}; "
                    "drop the setting, or choose preset 'custom' to set every option yourself."
                )
        return cls(**{**fixed, **overrides})

    @property
    def preset(self) -> str:
        """The preset whose every fixed value these settings hold ("featurebridge" first), else "custom"."""
        for name, fixed in PRESETS.items():
            if all(getattr(self, key) == value for key, value in fixed.items()):
                return name
        return "custom"

    def preset_differences(self, name: str) -> dict[str, tuple[Any, Any]]:
        """Settings that differ from what preset ``name`` fixes: setting -> (preset's value, this value)."""
        fixed = PRESETS.get(name, {})
        return {k: (v, getattr(self, k)) for k, v in fixed.items() if getattr(self, k) != v}

    @property
    def sparse_unmatched_value(self) -> float:
        """The sparse 1-1 method's value of an unmatched feature (``unmatched_value`` or ``min_corr``)."""
        return self.min_corr if self.unmatched_value is None else float(self.unmatched_value)

    def to_dict(self) -> dict[str, Any]:
        """The settings as a JSON-ready dict (what the manifest records), with the derived ``preset`` name."""
        return {"preset": self.preset, **asdict(self)}

    @classmethod
    def from_dict(cls, record: dict[str, Any]) -> MatchSettings:
        """Settings back from :meth:`to_dict` (the derived ``preset`` key and unknown keys are ignored)."""
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in record.items() if k in known})
