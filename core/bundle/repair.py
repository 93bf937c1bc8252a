"""Which command rebuilds a bundle part: named in every message about a missing or damaged part.

A stage's own parts are rebuilt by rerunning that stage (``python -m core match BUNDLE``); the
harvest parts (units, docs, codes, decoders, features) only by a new harvest, whose command is
rebuilt from what the manifest recorded.
"""

from __future__ import annotations

import shlex
from pathlib import Path
from typing import Any

# part -> the CLI stage command that writes it
STAGE_OF_PART = {
    "matches": "match",
    "weight_matches": "match",
    "assignment": "match",
    "similarity": "similarity",
    "examples": "dashboards",
    "dashboards": "dashboards",
    "umap": "umap",
    "analyses": "analyses",
    "causal": "causal",
}


def _spec_text(spec: dict[str, Any], default_kind: str) -> str | None:
    kind, source = spec.get("kind"), spec.get("source")
    if not source:
        return None
    if kind == "release":
        return f"release:{source}/{spec.get('sae_id')}"
    return f"{kind or default_kind}:{source}"


def harvest_command(manifest: dict[str, Any], path: str | Path) -> str:
    """The command that rebuilds a whole bundle, from what its manifest recorded.

    Args:
        manifest: the bundle's manifest.
        path: the bundle folder.

    Returns:
        A shell command (with ``...`` where the manifest lacks an input).
    """
    where = shlex.quote(str(path))
    if "demo" in manifest:
        pair = manifest.get("demo", {}).get("pair")
        return "python -m core demo --rebuild" + (f" --pair {pair}" if pair and pair != "spine" else "")
    args = ["python -m core compare"]
    sides = manifest.get("sides") or {}
    crosscoder = (manifest.get("crosscoder") or {}).get("spec") or {}
    if crosscoder.get("path"):
        args.append(f"--crosscoder {shlex.quote(str(crosscoder['path']))}")
        for key, flag in (("format", "--crosscoder-format"), ("scale_a", "--scale-a"), ("scale_b", "--scale-b")):
            if crosscoder.get(key) not in (None, "auto"):
                args.append(f"{flag} {crosscoder[key]}")
    for name in ("a", "b"):
        side = sides.get(name) or {}
        sae = _spec_text((side.get("sae") or {}).get("spec") or {}, "local")
        model = _spec_text(side.get("model") or {}, "hf")
        if not crosscoder.get("path"):
            args.append(f"--sae-{name} {shlex.quote(sae) if sae else '...'}")
        args.append(f"--model-{name} {shlex.quote(model) if model else '...'}")
        tokenizer = (side.get("model") or {}).get("tokenizer")
        if tokenizer:
            args.append(f"--tokenizer-{name} {shlex.quote(str(tokenizer))}")
        if side.get("hook"):
            args.append(f"--hook-{name} {shlex.quote(str(side['hook']))}")
    corpus = manifest.get("corpus") or {}
    if corpus.get("kind") in ("fortunes", "kjv"):
        args.append(f"--corpus {corpus['kind']}")
    elif corpus.get("kind") in ("file", "hf") and corpus.get("source"):
        args.append(f"--corpus {shlex.quote(corpus['kind'] + ':' + str(corpus['source']))}")
    harvest = (manifest.get("settings") or {}).get("harvest") or {}
    for key, flag in (("max_tokens", "--max-tokens"), ("max_len", "--max-len")):
        if key in harvest:
            args.append(f"{flag} {harvest[key]}")
    args.append(f"--out {where} --overwrite")
    return " ".join(args)


def repair_command(manifest: dict[str, Any], path: str | Path, part: str) -> str:
    """The command that rebuilds ``part`` of the bundle at ``path``.

    Args:
        manifest: the bundle's manifest.
        path: the bundle folder.
        part: a part name (see ``core.bundle.schema.PART_FILES``).

    Returns:
        A shell command.
    """
    stage = STAGE_OF_PART.get(part)
    if stage is not None:
        return f"python -m core {stage} {shlex.quote(str(path))}"
    return harvest_command(manifest, path)
