"""The two sides of every comparison, ``a`` and ``b``: one place for the helpers that name them."""

from __future__ import annotations

from core.errors import SideError

SIDES = ("a", "b")


def check_side(side: str) -> str:
    """Return ``side`` if it is ``"a"`` or ``"b"``.

    Args:
        side: a side name.

    Returns:
        The same name.

    Raises:
        SideError: for any other value.
    """
    if side not in SIDES:
        raise SideError(f"Side {side!r} does not exist; choose 'a' or 'b'.")
    return side


def other_side(side: str) -> str:
    """The other side: ``"b"`` for ``"a"`` and ``"a"`` for ``"b"``.

    Args:
        side: ``"a"`` or ``"b"``.

    Returns:
        The opposite side.
    """
    return "b" if check_side(side) == "a" else "a"
