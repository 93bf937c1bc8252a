"""The causal check: remove a latent's contribution in both models, measure each output shift, correlate them.

One mechanism for a crosscoder latent j (its contribution f_j d_{l,j} / s_l in model l) and
for a matched SAE pair (feature i of SAE A in model A, feature j of SAE B in model B, each
contribution f d as the SAE's decoder writes it):

1. a probe text runs through each model once; the hook's activation, the inputs of every
   later block and the clean output are kept (:func:`capture_replay`);
2. for every checked latent that fires on the probe, the activation minus the latent's
   contribution (at the kept, non-special tokens where it fires) runs through the later blocks
   only, in batches, the clean activation as the batch's first row (:func:`replay`);
3. the shift per probe: for a causal LM the KL divergence KL(p_clean || p_ablated) of the
   next-token distributions, averaged over the probe's positions; for an encoder-only model
   (no next-token distribution) the relative change of the last block's output,
   mean over positions of ||h_ablated - h_clean|| / ||h_clean||;
4. causal equivalence: the Pearson correlation of the two models' shift vectors over the
   probes (``active``: the probes where either side's latent fires; ``all``: every probe), with a
   permutation p-value (B's shifts shuffled over the same probes), p = (b + 1) / (n + 1).

A latent whose contribution is zero in a model (a zero decoder row there) leaves that
model's output exactly as it was: its shifts are 0 and the pair is reported with status
``no_shift_b`` (or ``_a``), never as NaN. Replaying the later blocks is checked once per
model against the model's own forward pass; an architecture whose tail cannot be replayed
is refused with a clear message rather than measured wrongly.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import polars as pl
import torch
from torch import nn

from core.crosscoder.model import Crosscoder
from core.crosscoder.settings import CausalSettings
from core.errors import CrosscoderError
from core.harvest.hooks import HookPoint
from core.harvest.loading import LoadedModel, LoadedSAE
from core.harvest.specs import HarvestSettings
from core.harvest.windows import tokenize_windows
from core.progress import ProgressFn, no_progress
from core.sides import SIDES

# elements of the ablated outputs one batch may hold (a causal LM's [n, L, vocab] log-probabilities)
_OUTPUT_ELEMENTS = 24_000_000
# the replay of the clean activation must reproduce the model's own output this closely
_REPLAY_RTOL = 1e-3
_FINAL_NORMS = ("norm", "ln_f", "final_layer_norm", "final_norm")


@dataclass
class Replay:
    """What one clean run of a probe keeps.

    Attributes:
        acts: [L, d] the hook's activation.
        calls: for each later block: (index, positional args after the hidden state, kwargs,
            whether the hidden state was passed as the ``hidden_states`` kwarg).
        reference: [L, d] the last block's output, or [L, V] log-probabilities (causal LMs),
            from the model's own forward pass.
    """

    acts: torch.Tensor
    calls: list[tuple[int, tuple[Any, ...], dict[str, Any], bool]]
    reference: torch.Tensor


def measure_name(model: LoadedModel) -> str:
    """``kl`` for a causal LM, ``hidden_shift`` for an encoder-only model."""
    return "kl" if model.is_causal else "hidden_shift"


def _final_norm(model: LoadedModel) -> nn.Module:
    for holder in (model.base, getattr(model.base, "decoder", None)):
        for name in _FINAL_NORMS:
            module = getattr(holder, name, None) if holder is not None else None
            if isinstance(module, nn.Module):
                return module
    raise CrosscoderError(
        f"The causal check cannot find the final norm of {model.name} ({type(model.base).__name__}); "
        "this architecture is not supported by the causal check."
    )


def _head(model: LoadedModel) -> Callable[[torch.Tensor], torch.Tensor]:
    """Last block's output -> log-probabilities (causal LMs) or the output itself (encoders)."""
    if not model.is_causal:
        return lambda h: h
    norm = _final_norm(model)
    unembed: Any = model.model.get_output_embeddings()
    cap = getattr(model.model.config, "final_logit_softcapping", None)

    def head(h: torch.Tensor) -> torch.Tensor:
        logits = unembed(norm(h)).float()
        if cap:
            logits = torch.tanh(logits / cap) * cap
        return torch.log_softmax(logits, dim=-1)

    return head


def capture_replay(model: LoadedModel, hook: HookPoint, ids: torch.Tensor, device: torch.device) -> Replay:
    """Run one probe through the model, keeping the hook's activation and the later blocks' inputs.

    Args:
        model: the model.
        hook: where the latent is removed.
        ids: [1, L] token ids.
        device: where the model is.

    Returns:
        The probe's :class:`Replay`.
    """
    blocks = model.blocks
    calls: list[tuple[int, tuple[Any, ...], dict[str, Any], bool]] = []
    store: dict[str, Any] = {}
    handles = []
    first = hook.after_block + 1
    for index in range(first, len(blocks)):

        def pre(module: nn.Module, args: tuple, kwargs: dict, index: int = index) -> None:
            if args:
                calls.append((index, tuple(args[1:]), dict(kwargs), False))
                hidden = args[0]
            else:
                calls.append((index, (), {k: v for k, v in kwargs.items() if k != "hidden_states"}, True))
                hidden = kwargs["hidden_states"]
            if index == first and hook.after_block < 0:
                store["acts"] = hidden

        handles.append(blocks[index].register_forward_pre_hook(pre, with_kwargs=True))
    if hook.after_block >= 0:

        def post(module: nn.Module, args: tuple, output: object) -> None:
            store["acts"] = output[0] if isinstance(output, tuple) else output

        handles.append(blocks[hook.after_block].register_forward_hook(post))

    def last(module: nn.Module, args: tuple, output: object) -> None:
        store["last"] = output[0] if isinstance(output, tuple) else output

    handles.append(blocks[len(blocks) - 1].register_forward_hook(last))
    mask = torch.ones_like(ids)
    try:
        with torch.inference_mode():
            if model.is_causal:
                out = model.model(input_ids=ids.to(device), attention_mask=mask.to(device), use_cache=False)
                reference = torch.log_softmax(out.logits[0].float(), dim=-1)
            else:
                model.base(input_ids=ids.to(device), attention_mask=mask.to(device))
                reference = store["last"][0].float()
    finally:
        for handle in handles:
            handle.remove()
    return Replay(store["acts"][0].detach(), calls, reference)


def replay(
    model: LoadedModel, probe: Replay, hidden: torch.Tensor, head: Callable[[torch.Tensor], torch.Tensor]
) -> torch.Tensor:
    """Run hook activations [n, L, d] through the blocks after the hook (and the head of a causal LM).

    Returns:
        [n, L, V] log-probabilities (causal LMs) or [n, L, d] last-block outputs.
    """
    h = hidden
    with torch.inference_mode():
        for index, args, kwargs, as_kwarg in probe.calls:
            block = model.blocks[index]
            out = block(*args, **{**kwargs, "hidden_states": h}) if as_kwarg else block(h, *args, **kwargs)
            h = out[0] if isinstance(out, tuple) else out
        return head(h)


def shift(model: LoadedModel, clean: torch.Tensor, ablated: torch.Tensor) -> torch.Tensor:
    """Per item, the probe's output shift: mean KL(p_clean || p_ablated) over positions, or the mean relative L2 change.

    Args:
        model: decides the measure (causal LM or encoder).
        clean: [L, V] log-probabilities or [L, d] outputs.
        ablated: [n, L, V] or [n, L, d].

    Returns:
        float64 [n].
    """
    if model.is_causal:
        p = clean.exp()
        return ((p[None] * (clean[None] - ablated)).sum(dim=-1)).clamp_min(0.0).mean(dim=-1).double()
    rel = (ablated - clean[None]).norm(dim=-1) / clean.norm(dim=-1).clamp_min(1e-12)[None]
    return rel.mean(dim=-1).double()


class LatentSource:
    """How the checked latents read both models' hook activations and what each writes back.

    Subclasses set ``directions`` (side -> [N, d] raw-space contribution of one unit of code)
    and implement :meth:`codes`.
    """

    directions: dict[str, torch.Tensor]
    n: int

    def codes(self, acts: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """side -> [T, N] codes of the checked latents at the kept tokens ``acts`` [T, d] holds."""
        raise NotImplementedError


class CrosscoderLatents(LatentSource):
    """Crosscoder latents: one code from both models, written back as f_j d_{l,j} / s_l.

    Args:
        cc: the crosscoder.
        latents: the latent indices to check.
    """

    def __init__(self, cc: Crosscoder, latents: Sequence[int]) -> None:
        self.cc = cc
        self.latents = torch.as_tensor(np.asarray(latents, dtype=np.int64), device=cc.device)
        self.n = len(latents)
        self.directions = {
            side: cc.contribution_directions(m, self.latents.cpu().numpy()) for m, side in enumerate(SIDES)
        }

    def codes(self, acts: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        x = self.cc.normalise(torch.stack([acts[s].to(self.cc.device) for s in SIDES], dim=1))
        f = self.cc.encode(x)
        return {side: self.cc.model_code(f, m)[:, self.latents] for m, side in enumerate(SIDES)}


class SAEPairs(LatentSource):
    """Matched SAE pairs: feature i of SAE A in model A, feature j of SAE B in model B.

    A feature's contribution is ``decode(e_i) - decode(0)``, what one unit of its code adds to
    the SAE's output (exact for every affine decoder, whatever normalisation the SAE folds in).

    Args:
        saes: side -> the SAE.
        features: side -> feature ids, paired by position.
    """

    def __init__(self, saes: dict[str, LoadedSAE], features: dict[str, Sequence[int]]) -> None:
        self.saes = saes
        self.features = {s: torch.as_tensor(np.asarray(features[s], dtype=np.int64)) for s in SIDES}
        self.n = len(features["a"])
        self.directions = {}
        with torch.inference_mode():
            for side in SIDES:
                sae = saes[side].sae
                d_sae = saes[side].d_sae
                device = next(sae.parameters()).device
                eye = torch.zeros(self.n, d_sae, device=device)
                eye[torch.arange(self.n), self.features[side].to(device)] = 1.0
                zero = sae.decode(torch.zeros(1, d_sae, device=device))
                self.directions[side] = (sae.decode(eye) - zero).float()

    def codes(self, acts: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        out = {}
        with torch.inference_mode():
            for side in SIDES:
                sae = self.saes[side].sae
                device = next(sae.parameters()).device
                out[side] = sae.encode(acts[side].to(device))[:, self.features[side].to(device)]
        return out


@dataclass(frozen=True)
class Probe:
    """One probe text and the tokens each side reads of it.

    Attributes:
        text: the text.
        doc: the document it was cut from.
        char_start: where it starts in the document.
        ids: side -> [1, L] token ids (special tokens included).
        keep: side -> bool [L], the tokens a latent may be removed at (non-special, as the harvest keeps them).
    """

    text: str
    doc: int
    char_start: int
    ids: dict[str, torch.Tensor]
    keep: dict[str, np.ndarray]


def draw_probes(
    docs: Sequence[str], doc_ids: Sequence[int], tokenizers: dict[str, Any], settings: CausalSettings
) -> list[Probe]:
    """Cut the documents into windows of ``probe_len`` tokens (side A's tokenizer) and draw ``n_probes`` of them.

    Each drawn window's text is tokenized by each side's own tokenizer (the same tokens when the
    two share one), truncated to ``probe_len``.

    Args:
        docs: document texts.
        doc_ids: each document's id in the bundle.
        tokenizers: side -> tokenizer.
        settings: ``n_probes``, ``probe_len``, ``seed``.

    Returns:
        The probes, in document order.
    """
    cut = HarvestSettings(max_tokens=10**12, max_len=settings.probe_len, batch_tokens=max(settings.probe_len, 8192))
    windows = [w for w in tokenize_windows(tokenizers["a"], docs, cut) if w.n_units >= 2]
    if not windows:
        raise CrosscoderError(
            "The bundle's documents give no probe of two tokens or more; the causal check needs text."
        )
    rng = np.random.default_rng([settings.seed, 17])
    chosen = np.sort(rng.choice(len(windows), size=min(settings.n_probes, len(windows)), replace=False))
    probes = []
    for i in chosen.tolist():
        w = windows[i]
        spans = w.offsets[w.keep]
        lo, hi = int(spans[0, 0]), int(spans[-1, 1])
        text = docs[w.doc][lo:hi]
        ids, keep = {}, {}
        for side, tok in tokenizers.items():
            (window,) = tokenize_windows(tok, [text], cut)[:1]
            ids[side] = torch.as_tensor(window.input_ids, dtype=torch.long)[None]
            keep[side] = window.keep.copy()
        probes.append(Probe(text, int(doc_ids[w.doc]), lo, ids, keep))
    return probes


@dataclass(frozen=True)
class CausalShifts:
    """Each side's output shift for every checked latent on every probe.

    Attributes:
        shift: side -> float64 [N, P].
        active: bool [N, P], the latent fires on the probe in either model.
        measure: side -> ``kl`` or ``hidden_shift``.
    """

    shift: dict[str, np.ndarray]
    active: np.ndarray
    measure: dict[str, str]


def check_replay(model: LoadedModel, probe: Replay, head: Callable[[torch.Tensor], torch.Tensor]) -> None:
    """Refuse a model whose later blocks the replay does not reproduce (its own forward pass is the reference)."""
    again = replay(model, probe, probe.acts[None], head)[0]
    scale = probe.reference.abs().max().clamp_min(1e-6)
    error = float((again - probe.reference).abs().max() / scale)
    if not error <= _REPLAY_RTOL:
        raise CrosscoderError(
            f"The causal check could not replay {model.name} after its hook (relative error {error:.2g}); "
            "this architecture's later layers need inputs the replay does not capture."
        )


def compute_shifts(
    models: dict[str, LoadedModel],
    hooks: dict[str, HookPoint],
    source: LatentSource,
    probes: Sequence[Probe],
    settings: CausalSettings,
    device: torch.device,
    progress: ProgressFn = no_progress,
) -> CausalShifts:
    """Ablate every checked latent on every probe in both models and record the output shifts.

    Args:
        models: side -> model.
        hooks: side -> hook point.
        source: the checked latents (crosscoder latents or SAE pairs).
        probes: the probes.
        settings: ``batch_latents``.
        device: where the models run.
        progress: called as ``progress("causal", probes_done, n_probes)``.

    Returns:
        The shifts.
    """
    n, p = source.n, len(probes)
    shifts = {s: np.zeros((n, p), np.float64) for s in SIDES}
    active = np.zeros((n, p), bool)
    heads = {s: _head(models[s]) for s in SIDES}
    checked: set[str] = set()
    for col, probe in enumerate(probes):
        runs = {s: capture_replay(models[s], hooks[s], probe.ids[s], device) for s in SIDES}
        for s in SIDES:
            if s not in checked:
                check_replay(models[s], runs[s], heads[s])
                checked.add(s)
        kept = {s: torch.from_numpy(np.flatnonzero(probe.keep[s])).to(runs[s].acts.device) for s in SIDES}
        codes = source.codes({s: runs[s].acts[kept[s]].float() for s in SIDES})
        fires = {s: (codes[s] != 0).any(dim=0).cpu().numpy() for s in SIDES}
        active[:, col] = fires["a"] | fires["b"]
        for s in SIDES:
            model, run = models[s], runs[s]
            direction = source.directions[s].to(run.acts.device)
            live = np.flatnonzero(fires[s] & (direction.norm(dim=1) > 0).cpu().numpy())
            if not live.size:
                continue
            length, width = run.acts.shape
            per_item = length * (run.reference.shape[-1])
            step = max(1, min(settings.batch_latents, _OUTPUT_ELEMENTS // max(per_item, 1) - 1))
            for lo in range(0, live.size, step):
                items = live[lo : lo + step]
                code = codes[s][:, items].to(run.acts.device).to(run.acts.dtype)  # [T, n]
                delta = torch.zeros(items.size, length, width, dtype=run.acts.dtype, device=run.acts.device)
                delta[:, kept[s], :] = code.T[:, :, None] * direction[items][:, None, :].to(run.acts.dtype)
                hidden = torch.cat([run.acts[None], run.acts[None] - delta])
                out = replay(model, run, hidden, heads[s])
                shifts[s][items, col] = shift(model, out[0], out[1:]).cpu().numpy()
        progress("causal", col + 1, p)
    return CausalShifts(shifts, active, {s: measure_name(models[s]) for s in SIDES})


def compute_equivalence(shifts: CausalShifts, settings: CausalSettings) -> pl.DataFrame:
    """Causal equivalence per checked latent: Pearson of the two shift vectors, with a permutation p-value.

    Args:
        shifts: the shifts of :func:`compute_shifts`.
        settings: ``probes`` (active or all), ``min_active``, ``n_perm``, ``seed``.

    Returns:
        One row per latent (in input order): ``equivalence`` (null unless status is ``ok``),
        ``p_value``, ``n_probes_used``, ``n_active``, ``mean_shift_a``, ``mean_shift_b``,
        ``status`` (``ok``, ``inactive``, ``few_probes``, ``no_shift_a``, ``no_shift_b``,
        ``no_shift``, ``constant``), ``shift_a``, ``shift_b``, ``active`` (per probe).
    """
    sa, sb, active = shifts.shift["a"], shifts.shift["b"], shifts.active
    n = sa.shape[0]
    rng = np.random.default_rng([settings.seed, 23])
    rows: dict[str, list[Any]] = {k: [] for k in ("equivalence", "p_value", "n_probes_used", "n_active", "status")}
    for i in range(n):
        used = active[i] if settings.probes == "active" else np.ones(active.shape[1], bool)
        x, y = sa[i, used], sb[i, used]
        n_active = int(active[i].sum())
        status, r, p = _pair_status(x, y, n_active, settings), None, None
        if status == "ok":
            r = _pearson(x, y)
            if settings.n_perm:
                perms = rng.permuted(np.broadcast_to(y, (settings.n_perm, y.size)), axis=1)
                null = _pearson_rows(x, perms)
                p = float((1 + np.sum(null >= r - 1e-12)) / (settings.n_perm + 1))
        rows["equivalence"].append(r)
        rows["p_value"].append(p)
        rows["n_probes_used"].append(int(used.sum()))
        rows["n_active"].append(n_active)
        rows["status"].append(status)
    return pl.DataFrame(
        {
            **rows,
            "mean_shift_a": sa.mean(axis=1),
            "mean_shift_b": sb.mean(axis=1),
            "shift_a": [row.tolist() for row in sa],
            "shift_b": [row.tolist() for row in sb],
            "active": [row.tolist() for row in active],
        },
        schema_overrides={
            "equivalence": pl.Float64,
            "p_value": pl.Float64,
            "n_probes_used": pl.Int64,
            "n_active": pl.Int64,
            "status": pl.String,
        },
    )


def _pair_status(x: np.ndarray, y: np.ndarray, n_active: int, settings: CausalSettings) -> str:
    if n_active == 0:
        return "inactive"
    if x.size < settings.min_active or (settings.probes == "active" and n_active < settings.min_active):
        return "few_probes"
    zero_a, zero_b = not np.any(x), not np.any(y)
    if zero_a and zero_b:
        return "no_shift"
    if zero_a:
        return "no_shift_a"
    if zero_b:
        return "no_shift_b"
    if np.ptp(x) == 0 or np.ptp(y) == 0:
        return "constant"
    return "ok"


def _pearson(x: np.ndarray, y: np.ndarray) -> float:
    xc, yc = x - x.mean(), y - y.mean()
    return float(np.clip((xc @ yc) / np.sqrt((xc @ xc) * (yc @ yc)), -1.0, 1.0))


def _pearson_rows(x: np.ndarray, ys: np.ndarray) -> np.ndarray:
    xc = x - x.mean()
    yc = ys - ys.mean(axis=1, keepdims=True)
    return (yc @ xc) / np.sqrt((xc @ xc) * np.einsum("ij,ij->i", yc, yc))
