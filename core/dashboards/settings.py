"""Settings of the dashboards stage and the columns of its parts."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

from core.errors import SpecError

# quantiles stored per feature, over its NON-ZERO activations (a feature firing on 1% of
# units has a corpus-wide 95th percentile of 0, useless as a threshold)
QUANTILE_PROBS: tuple[float, ...] = tuple(i / 20 for i in range(20)) + (0.99, 1.0)


EXAMPLE_COLUMNS = (
    "feature",
    "kind",
    "rank",
    "unit",
    "act",
    "doc",
    "pos",
    "window_start",
    "center",
    "window_text",
    "window_acts",
)


DASHBOARD_COLUMNS = (
    "feature",
    "count",
    "freq",
    "mean_active",
    "std_active",
    "mean_all",
    "max",
    "quantiles",
    "hist_width",
    "hist_counts",
    "top_tokens_by_count",
    "top_tokens_by_count_n",
    "top_tokens_by_mean",
    "top_tokens_by_mean_act",
    "token_stats",
)


LOGIT_COLUMNS = ("promoted_tokens", "promoted_logits", "suppressed_tokens", "suppressed_logits")


DASHBOARD_FILES = {"a": "dashboards_a.parquet", "b": "dashboards_b.parquet"}


EXAMPLE_FILES = {"a": "examples_a.parquet", "b": "examples_b.parquet"}


@dataclass(frozen=True)
class DashboardSettings:
    """How much dashboard data to keep per feature.

    Attributes:
        n_top: top-activating examples per feature.
        window: context units kept on each side of an example (within its document).
        n_quantiles: activation quantile groups (equal shares of the feature's non-zero
            activations).
        n_per_quantile: examples kept per quantile group.
        hist_bins: histogram bins (even, so bin pairs can merge); between half and all of
            them are used.
        n_top_tokens: tokens listed by count and by mean activation.
        min_token_count: a token needs this many activations to be listed by mean
            activation (one lucky unit should not top the list).
        sample_size: activations sampled per feature for quantiles and quantile examples;
            quantiles are exact for features firing on at most this many units.
        chunk_units: units per streamed chunk (memory vs. per-chunk overhead).
        n_logits: promoted and suppressed tokens kept in the logit effect.
        seed: seeds the sample.
        threads: SAEs scanned at once (one thread each; 1 scans them in turn).
    """

    n_top: int = 20
    window: int = 12
    n_quantiles: int = 5
    n_per_quantile: int = 4
    hist_bins: int = 64
    n_top_tokens: int = 10
    min_token_count: int = 2
    sample_size: int = 256
    chunk_units: int = 65_536
    n_logits: int = 10
    seed: int = 0
    threads: int = 2

    def __post_init__(self) -> None:
        for name in (
            "n_top",
            "n_quantiles",
            "n_per_quantile",
            "n_top_tokens",
            "min_token_count",
            "chunk_units",
            "n_logits",
            "threads",
        ):
            value = getattr(self, name)
            if not isinstance(value, int) or value < 1:
                raise SpecError(f"Dashboard setting {name} must be a positive integer, got {value!r}.")
        if not isinstance(self.window, int) or self.window < 0:
            raise SpecError(f"Dashboard setting window must be a non-negative integer, got {self.window!r}.")
        if not isinstance(self.hist_bins, int) or self.hist_bins < 2 or self.hist_bins % 2:
            raise SpecError(
                f"Dashboard setting hist_bins must be an even integer of at least 2, got {self.hist_bins!r}."
            )
        if not isinstance(self.sample_size, int) or self.sample_size < self.n_quantiles * self.n_per_quantile:
            raise SpecError(
                f"Dashboard setting sample_size ({self.sample_size!r}) must be an integer of at least "
                f"n_quantiles x n_per_quantile ({self.n_quantiles * self.n_per_quantile})."
            )
        if not isinstance(self.seed, int) or self.seed < 0:
            raise SpecError(f"Dashboard setting seed must be a non-negative integer, got {self.seed!r}.")

    def to_dict(self) -> dict[str, Any]:
        """The settings as a plain dict (for the manifest)."""
        return asdict(self)
