"""Errors a user can cause, each carrying one sentence: what is wrong and what to do.

The CLI prints the sentence and exits 2; the app shows it with ``st.error``. Anything
that is not a :class:`UserError` is a bug and keeps its traceback.
"""

from __future__ import annotations


class UserError(Exception):
    """A problem with the user's input, explained in one sentence."""


class SideError(UserError, ValueError):
    """A side name other than ``a`` or ``b``."""


class SpecError(UserError):
    """A configuration value is outside what is allowed."""


class SAELoadError(UserError):
    """An SAE could not be loaded from the place the user named."""


class ModelLoadError(UserError):
    """A model or tokenizer could not be loaded from the place the user named."""


class HookError(UserError):
    """A hook name is unknown, or the SAE does not fit the hook's width."""


class CorpusError(UserError):
    """The corpus is missing, empty, or has no usable text column."""


class BundleError(UserError):
    """A comparison bundle is missing, incomplete, of an unknown schema, or in the way."""


class SimilarityError(UserError):
    """Paired decoder rows cannot be compared (too few pairs, non-finite or constant rows, bad pairs)."""


class MatchingError(UserError):
    """Two SAEs' codes, decoders or matching settings cannot be matched (misaligned, empty, non-finite, all dead)."""


class DashboardError(UserError):
    """Dashboard, search or discovery input that cannot be used (bad ids, empty text, ...)."""


class HarvestError(UserError):
    """A harvest cannot go on: an SAE gave non-finite codes, or a shard on disk is damaged."""


class EngineError(UserError):
    """The chosen engine cannot run: its extra is not installed, its cluster is unreachable, or a worker failed."""


class CrosscoderError(UserError):
    """A crosscoder checkpoint that cannot be loaded or does not fit the models given (layout, M, d, NaN, pickle)."""
