"""The demo SAEs the project ships, and how a demo build gets its SAEs (shipped, cached, or trained).

Training the two demo SAEs is most of a first build's time (minutes on 2 CPU cores), so the
project ships them as files: fp16 safetensors in sae-lens's disk format under
``assets/demo_saes/<pair>/`` (about 3 MB per MiniLM SAE), written by ``python -m core demo
--retrain`` with the same recipe (core.demo.train) a first build would run. A build uses them when
their recorded recipe (settings and hooks) is the one asked for, after checking each SAE's
explained variance on held-out documents against the recipe's floor: a damaged or mismatched
file fails that check with a sentence saying how to retrain, it is never used silently.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable, Mapping
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np
import torch

from core.bundle.io import write_json_atomic
from core.demo.settings import DemoSettings, shipped_sae_dir
from core.demo.train import split_held_out_rows, train_side_sae
from core.errors import SAELoadError
from core.harvest.encode import collect_activations
from core.harvest.loading import LoadedModel, load_model, load_sae
from core.harvest.sanity import explained_variance
from core.harvest.specs import HarvestSettings, ModelSpec, SAESpec
from core.progress import ProgressFn

# held-out units the load check encodes per SAE: enough for a stable EV, a few seconds on 2 cores
CHECK_UNITS = 4096
# side name -> (model spec, hook)
PairSides = Mapping[str, tuple[ModelSpec, str]]
# loaded models -> (side -> windows, extra report fields)
WindowsFn = Callable[[dict[str, LoadedModel]], tuple[dict[str, list], dict[str, Any]]]


def recipe_record(settings: DemoSettings, sides: PairSides) -> dict[str, Any]:
    """What identifies SAEs trained for a demo pair: the recipe's settings and each side's model and hook."""
    return {
        "settings": asdict(settings),
        "sides": {name: {"model": asdict(spec), "hook": hook} for name, (spec, hook) in sides.items()},
        "recipe": 1,
    }


def shipped_report(pair: str, settings: DemoSettings, sides: PairSides) -> dict[str, Any] | None:
    """The shipped SAEs' training report when they were trained by this recipe for these sides, else None."""
    folder = shipped_sae_dir(pair)
    path = folder / "training.json"
    if not path.is_file() or not all((folder / f"sae_{name}" / "cfg.json").is_file() for name in sides):
        return None
    record = json.loads(path.read_text())
    if record.get("recipe") != json.loads(json.dumps(recipe_record(settings, sides))):
        return None
    return record.get("report")


def write_shipped_saes(pair: str, trained: Path, settings: DemoSettings, sides: PairSides, report: dict) -> Path:
    """Ship SAEs trained under ``trained`` (sae_a/, sae_b/): fp16 weights, the config, the training report.

    Args:
        pair: the demo pair (``spine`` or ``family``).
        trained: the folder holding the freshly trained ``sae_<side>`` folders.
        settings: the recipe they were trained with.
        sides: each side's model and hook.
        report: the training report (held-out EV, MSE, dead features, seconds).

    Returns:
        The shipped folder.
    """
    from safetensors.torch import load_file, save_file

    out = shipped_sae_dir(pair)
    out.mkdir(parents=True, exist_ok=True)
    for name in sides:
        src, dst = trained / f"sae_{name}", out / f"sae_{name}"
        dst.mkdir(parents=True, exist_ok=True)
        weights = load_file(str(src / "sae_weights.safetensors"))
        # fp16 halves the files; the load check below holds the reloaded SAE to the recipe's EV floor
        save_file(
            {k: v.to(torch.float16).contiguous() for k, v in weights.items()}, str(dst / "sae_weights.safetensors")
        )
        shutil.copy2(src / "cfg.json", dst / "cfg.json")
    write_json_atomic({"recipe": recipe_record(settings, sides), "report": report}, out / "training.json")
    return out


def held_out_explained_variance(
    model: LoadedModel,
    hook_name: str,
    sae_dir: Path,
    windows: list,
    held_rows: np.ndarray,
    device: torch.device,
    progress: ProgressFn,
) -> float:
    """An SAE's explained variance on (up to CHECK_UNITS) held-out units of the demo windows.

    Args:
        model: the side's model.
        hook_name: where the SAE reads.
        sae_dir: the SAE folder (sae-lens disk format).
        windows: the demo's windows of this side (rows are their units in order).
        held_rows: the held-out rows (whole held-out documents).
        device: where to run.
        progress: progress callback.

    Returns:
        The explained variance.
    """
    row_start = np.cumsum([0] + [w.n_units for w in windows])
    held = set(held_rows.tolist())
    chosen: list = []
    rows: list[int] = []
    for i, window in enumerate(windows):
        if int(row_start[i]) in held:
            chosen.append(window)
            rows.extend(range(int(row_start[i]), int(row_start[i + 1])))
            if len(rows) >= CHECK_UNITS:
                break
    acts = collect_activations(model, model.hook(hook_name), chosen, HarvestSettings(), device, progress)
    sae = load_sae(SAESpec("local", str(sae_dir)), device).sae
    x = torch.from_numpy(acts).to(device)
    with torch.inference_mode():
        x_hat = sae.decode(sae.encode(x))
    return float(explained_variance(x.cpu(), x_hat.cpu()))


def prepare_pair_saes(
    pair: str,
    sides: PairSides,
    settings: DemoSettings,
    root: Path,
    windows_fn: WindowsFn,
    device: torch.device,
    progress: ProgressFn,
    retrain: bool = False,
) -> tuple[dict[str, Path], dict[str, Any]]:
    """Both SAE folders of a demo pair and their training report: shipped, trained here before, or trained now.

    Shipped SAEs are used when their recipe matches and each passes the held-out EV check; SAEs
    trained here before (``root/training.json``) are reused as they are; otherwise (or with
    ``retrain``) both are trained by the recipe into ``root``, and ``retrain`` also ships them.

    Args:
        pair: ``spine`` or ``family``.
        sides: side -> (model spec, hook).
        settings: the recipe.
        root: the demo's cache folder.
        windows_fn: loaded models -> (side -> the windows the SAE trains on, extra report fields).
        device: where the models run.
        progress: progress callback.
        retrain: train even when shipped or cached SAEs exist, and ship the result.

    Returns:
        (side -> SAE folder, training report).
    """
    shipped = None if retrain else shipped_report(pair, settings, sides)
    cached = root / "training.json"
    if shipped is None and cached.is_file() and not retrain:
        return {name: root / f"sae_{name}" for name in sides}, json.loads(cached.read_text())
    models: dict[str, LoadedModel] = {}
    for i, (name, (model_spec, _)) in enumerate(sides.items()):
        progress("loading models", i, len(sides))
        models[name] = load_model(model_spec, device)
    progress("loading models", len(sides), len(sides))
    windows, extra = windows_fn(models)
    if shipped is not None:
        folder = shipped_sae_dir(pair)
        for name, (_, hook) in sides.items():
            _, held = split_held_out_rows(windows[name], settings)
            ev = held_out_explained_variance(
                models[name], hook, folder / f"sae_{name}", windows[name], held, device, progress
            )
            if ev < settings.min_explained_variance:
                raise SAELoadError(
                    f"The shipped demo SAE {folder / f'sae_{name}'} explains {ev:.3f} of held-out variance, below the "
                    f"recipe's {settings.min_explained_variance}; retrain it with python -m core demo --retrain."
                )
            shipped[name] = {**shipped.get(name, {}), "load_check_explained_variance": ev, "shipped": True}
        return {name: folder / f"sae_{name}" for name in sides}, shipped
    report: dict[str, Any] = dict(extra)
    for name, (_, hook) in sides.items():
        rows = split_held_out_rows(windows[name], settings)
        report[name] = train_side_sae(
            models[name], hook, windows[name], rows, settings, root / f"sae_{name}", device, progress
        )
    write_json_atomic(report, cached)
    if retrain:
        write_shipped_saes(pair, root, settings, sides, report)
    return {name: root / f"sae_{name}" for name in sides}, report
