"""Resolve the compute device once, then pass it explicitly."""

from __future__ import annotations

import torch

from core.errors import SpecError

DEVICE_CHOICES = ("auto", "cpu", "cuda")


def resolve_device(choice: str = "auto") -> torch.device:
    """Turn a user's device choice into a torch device.

    Args:
        choice: ``"auto"`` (cuda when available, else cpu), ``"cpu"`` or ``"cuda"``
            (``"cuda:N"`` also accepted).

    Returns:
        The torch device to run on.
    """
    if choice == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if choice == "cpu":
        return torch.device("cpu")
    if choice.startswith("cuda"):
        if not torch.cuda.is_available():
            raise SpecError(f"Device {choice!r} was asked for but no CUDA GPU is visible; use --device cpu or auto.")
        return torch.device(choice)
    raise SpecError(f"Unknown device {choice!r}; choose one of {', '.join(DEVICE_CHOICES)}.")
