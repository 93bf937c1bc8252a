"""Hook names on Hugging Face models, and capturing activations at them.

One naming, taken from TransformerLens / sae-lens configs, for the residual stream:

- ``blocks.L.hook_resid_post``: the output of block ``L`` (0-based), which is
  ``hidden_states[L + 1]`` of a transformers model run with ``output_hidden_states``
  (except for the last block of models whose final norm transformers folds into the last
  hidden state, such as Llama; capturing the block output avoids that trap).
- ``blocks.L.hook_resid_pre``: the input of block ``L``, which is ``hidden_states[L]``
  (``blocks.0.hook_resid_pre`` is the embedding output).

Activations are captured with forward hooks on the block modules, and the forward pass
stops right after the deepest block needed, so a model is never run past the layers a
harvest uses.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import torch
from torch import nn

from core.errors import HookError

_HOOK_RE = re.compile(r"^blocks\.(\d+)\.hook_resid_(post|pre)$")
# attribute paths of the block list in the architectures transformers ships
_BLOCK_PATHS = (
    "encoder.layer",
    "model.layers",
    "layers",
    "transformer.h",
    "h",
    "gpt_neox.layers",
    "model.decoder.layers",
)


@dataclass(frozen=True)
class HookPoint:
    """A residual-stream position.

    Attributes:
        name: canonical hook name.
        after_block: capture the output of this block (``-1``: the embedding output).
    """

    name: str
    after_block: int

    @property
    def hidden_states_index(self) -> int:
        """The index of the same activation in transformers' ``hidden_states`` tuple."""
        return self.after_block + 1


def valid_hook_names(n_layers: int) -> list[str]:
    """Every hook name accepted on a model with ``n_layers`` blocks."""
    return [f"blocks.{i}.hook_resid_pre" for i in range(n_layers)] + [
        f"blocks.{i}.hook_resid_post" for i in range(n_layers)
    ]


def parse_hook(name: str, n_layers: int) -> HookPoint:
    """Map a hook name onto a capture point of a model with ``n_layers`` blocks.

    Args:
        name: ``blocks.L.hook_resid_post`` or ``blocks.L.hook_resid_pre``.
        n_layers: the model's number of blocks.

    Returns:
        The hook point.
    """
    match = _HOOK_RE.match(name or "")
    if match is None or int(match.group(1)) >= n_layers:
        examples = f"blocks.0.hook_resid_pre .. blocks.{n_layers - 1}.hook_resid_post"
        raise HookError(f"Unknown hook {name!r} for a {n_layers}-block model; valid hooks are {examples}.")
    layer, kind = int(match.group(1)), match.group(2)
    return HookPoint(name, layer if kind == "post" else layer - 1)


def hook_for_block_output(after_block: int) -> HookPoint:
    """The canonical hook point for the output of ``after_block`` (``-1``: embeddings)."""
    if after_block < 0:
        return HookPoint("blocks.0.hook_resid_pre", -1)
    return HookPoint(f"blocks.{after_block}.hook_resid_post", after_block)


def find_blocks(model: nn.Module) -> nn.ModuleList:
    """The list of transformer blocks of a transformers model.

    Args:
        model: a transformers base model or a model with a head.

    Returns:
        The block ``ModuleList``.
    """
    for path in _BLOCK_PATHS:
        obj: object = model
        for attr in path.split("."):
            obj = getattr(obj, attr, None)
            if obj is None:
                break
        if isinstance(obj, nn.ModuleList) and len(obj) > 0:
            return obj
    raise HookError(
        f"Cannot find the transformer blocks of {type(model).__name__}; this architecture is not supported."
    )


class _StopForward(Exception):
    """Raised inside a hook once the deepest needed block has run."""


@contextmanager
def capture(blocks: nn.ModuleList, after_blocks: list[int]) -> Iterator[dict[int, torch.Tensor]]:
    """Capture block outputs during a forward pass, stopping after the deepest one.

    Use as ``with capture(blocks, [3]) as acts: run_forward(...)``; ``run_forward`` must be
    wrapped by :func:`run_until_captured` (which swallows the early stop).

    Args:
        blocks: the model's block list.
        after_blocks: block indices whose outputs to keep (``-1``: embedding output).

    Returns:
        A dict filled during the pass: block index -> [batch, seq, d_model] tensor.
    """
    store: dict[int, torch.Tensor] = {}
    deepest = max(after_blocks)
    handles = []
    if -1 in after_blocks:

        def pre_hook(module: nn.Module, args: tuple, kwargs: dict) -> None:
            store[-1] = args[0] if args else kwargs["hidden_states"]
            if deepest == -1:
                raise _StopForward

        handles.append(blocks[0].register_forward_pre_hook(pre_hook, with_kwargs=True))
    for index in sorted(i for i in set(after_blocks) if i >= 0):

        def post_hook(module: nn.Module, args: tuple, output: object, index: int = index) -> None:
            store[index] = output[0] if isinstance(output, tuple) else output  # type: ignore[assignment]
            if index == deepest:
                raise _StopForward

        handles.append(blocks[index].register_forward_hook(post_hook))
    try:
        yield store
    finally:
        for handle in handles:
            handle.remove()


def run_until_captured(model: nn.Module, **inputs: torch.Tensor) -> None:
    """Run ``model(**inputs)`` inside :func:`capture`, treating the early stop as success."""
    try:
        model(**inputs)
    except _StopForward:
        pass
