"""What a crosscoder comparison is made of, and the settings of its analyses and causal check (torch-free).

The app's build form, the CLI and the manifest use these without loading torch. Defaults and
thresholds live here once; docs/crosscoders.md states where each comes from.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

from core.errors import SpecError

# checkpoint layouts (docs/crosscoders.md): "auto" decides by key names, then the decoder shape
FORMATS = ("auto", "dictionary_learning", "ckkissane")
# dictionary_learning's CodeNormalization enum, 1-based, in its order (code_normalization_id)
CODE_NORMALIZATIONS = ("crosscoder", "sae", "mixed", "none", "decoupled")
# tags every latent gets, dead first (a latent with n_A = n_B = 0 has Delta-norm 0.5 and would pass as shared)
TAGS = ("dead", "shared", "a_only", "b_only", "unclassified")
# the model card's taxonomy keys for the same tags (index 0 = base = A, index 1 = chat = B in every public source)
CARD_KEYS = {
    "shared": "shared",
    "dead": "dead",
    "unclassified": "unclassified",
    "a_only": "base_only",
    "b_only": "chat_only",
}
TAG_MODES = ("threshold", "top_n")
# which latents the causal check ablates by default: crosscoder bundles take shared latents, SAE bundles kept pairs
CAUSAL_SELECTIONS = ("shared", "live", "kept_pairs")
PROBE_SETS = ("active", "all")


@dataclass(frozen=True)
class CrosscoderSpec:
    """A crosscoder checkpoint and how its inputs are scaled.

    Attributes:
        path: the checkpoint file (``.safetensors`` or ``.pt``) or the folder holding it.
        format: one of ``FORMATS``; a square checkpoint (M = F) must name its format.
        scale_a: model A's input scaling factor s_A (the crosscoder reads ``s_A * x_A``);
            ``None`` takes the checkpoint's own normaliser, else estimates sqrt(d) / E||x_A||.
        scale_b: the same for model B.
        scale_tokens: tokens the estimate of a missing factor averages over.
    """

    path: str
    format: str = "auto"
    scale_a: float | None = None
    scale_b: float | None = None
    scale_tokens: int = 32_768

    def __post_init__(self) -> None:
        if not self.path:
            raise SpecError("A crosscoder spec needs the checkpoint file or the folder holding it.")
        if self.format not in FORMATS:
            raise SpecError(f"Unknown crosscoder format {self.format!r}; choose one of {', '.join(FORMATS)}.")
        for name in ("scale_a", "scale_b"):
            value = getattr(self, name)
            if value is not None and not (value > 0 and value < float("inf")):
                raise SpecError(f"Crosscoder {name} must be a positive finite number, got {value!r}.")
        if self.scale_tokens <= 0:
            raise SpecError(f"Crosscoder scale_tokens must be positive, got {self.scale_tokens}.")

    def to_dict(self) -> dict[str, Any]:
        """The spec as a JSON-ready dict (what the manifest records)."""
        return asdict(self)


@dataclass(frozen=True)
class AnalysisSettings:
    """How every crosscoder latent is classified (the analyses stage).

    Attributes:
        eps: a decoder norm below this counts as zero (dead, and no cosine).
        b_only_above: Delta-norm (B-only -> 1) above which a latent is B-only (diffing-toolkit 0.9).
        a_only_below: Delta-norm below which a latent is A-only (0.1).
        shared_band: |Delta-norm - 0.5| below this is shared (0.1).
        top_n: the top-N mode's number of A-only and of B-only latents (ranked by Delta-norm).
        mode: which tag the app shows first, ``threshold`` or ``top_n`` (both are stored).
        nu_near_one: Latent Scaling ratio from which nu counts as "near 1" (no published cut).
        nu_near_zero: ratio below which |nu| counts as "near 0".
        min_ls_tokens: a latent needs this many active tokens for its betas to be reported.
    """

    eps: float = 1e-6
    b_only_above: float = 0.9
    a_only_below: float = 0.1
    shared_band: float = 0.1
    top_n: int = 100
    mode: str = "threshold"
    nu_near_one: float = 0.7
    nu_near_zero: float = 0.3
    min_ls_tokens: int = 5

    def __post_init__(self) -> None:
        def need(ok: bool, what: str) -> None:
            if not ok:
                raise SpecError(f"Analysis setting {what}; change it and run again.")

        need(self.eps > 0, f"eps={self.eps!r} must be positive")
        need(0.5 < self.b_only_above < 1.0, f"b_only_above={self.b_only_above!r} must lie in (0.5, 1)")
        need(0.0 < self.a_only_below < 0.5, f"a_only_below={self.a_only_below!r} must lie in (0, 0.5)")
        need(0.0 < self.shared_band <= 0.5, f"shared_band={self.shared_band!r} must lie in (0, 0.5]")
        need(isinstance(self.top_n, int) and self.top_n >= 1, f"top_n={self.top_n!r} must be an integer >= 1")
        need(self.mode in TAG_MODES, f"mode={self.mode!r} must be one of {', '.join(TAG_MODES)}")
        need(0.0 < self.nu_near_zero < self.nu_near_one, "nu_near_zero must be positive and below nu_near_one")
        need(isinstance(self.min_ls_tokens, int) and self.min_ls_tokens >= 1, "min_ls_tokens must be an integer >= 1")

    def to_dict(self) -> dict[str, Any]:
        """The settings as a JSON-ready dict (what the manifest records)."""
        return asdict(self)


@dataclass(frozen=True)
class CausalSettings:
    """How the causal check ablates latents and compares the two models' output shifts.

    Attributes:
        top_n: how many latents (crosscoder) or kept pairs (SAE bundle) are checked.
        select: ``shared`` (crosscoder shared latents, most frequent first), ``live`` (every
            live latent, most frequent first) or ``kept_pairs`` (an SAE bundle's kept pairs,
            highest correlation first); ``None`` picks ``shared`` or ``kept_pairs`` by bundle kind.
        n_probes: probe texts, drawn (seeded) from the bundle's documents.
        probe_len: tokens per probe window (special tokens included).
        probes: ``active`` correlates over the probes where either side's latent fires,
            ``all`` over every probe (a probe without firing has shift 0 on both sides).
        min_active: fewer active probes than this reports no equivalence (status ``few_probes``).
        n_perm: permutations of the probes for the p-value, p = (b + 1) / (n + 1).
        batch_latents: ablated copies of one probe run through the model at once.
        seed: seeds the probe draw and the permutations.
        device: ``auto``, ``cpu`` or ``cuda``.
    """

    top_n: int = 200
    select: str | None = None
    n_probes: int = 256
    probe_len: int = 32
    probes: str = "active"
    min_active: int = 5
    n_perm: int = 1000
    batch_latents: int = 64
    seed: int = 0
    device: str = "auto"

    def __post_init__(self) -> None:
        def need(ok: bool, what: str) -> None:
            if not ok:
                raise SpecError(f"Causal setting {what}; change it and run again.")

        for name in ("top_n", "n_probes", "min_active", "batch_latents"):
            value = getattr(self, name)
            need(isinstance(value, int) and value >= 1, f"{name}={value!r} must be an integer >= 1")
        need(isinstance(self.n_perm, int) and self.n_perm >= 0, f"n_perm={self.n_perm!r} must be an integer >= 0")
        need(isinstance(self.probe_len, int) and self.probe_len >= 8, f"probe_len={self.probe_len!r} must be >= 8")
        need(
            self.select is None or self.select in CAUSAL_SELECTIONS,
            f"select={self.select!r} must be None or one of {', '.join(CAUSAL_SELECTIONS)}",
        )
        need(self.probes in PROBE_SETS, f"probes={self.probes!r} must be one of {', '.join(PROBE_SETS)}")
        need(self.min_active >= 3, f"min_active={self.min_active!r} must be at least 3 (a correlation needs 3 points)")

    def to_dict(self) -> dict[str, Any]:
        """The settings as a JSON-ready dict (what the manifest records)."""
        return asdict(self)
