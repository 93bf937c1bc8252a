"""The deletion policy: what an output folder holds, and the only ways a build may replace it.

A build or a stage removes a folder only when everything in it is ours: a bundle this tool
wrote (its manifest says so and it holds nothing but bundle files) or an unfinished build of
ours (our work folder or build marker). It never removes an empty path, the current folder or
one above it, a home folder or one above it, a filesystem root, a symbolic link, a folder that
holds an input (SAE, model, corpus), or a folder holding any file it did not write.

New content is never written over the old: a build writes a staging folder beside the target
(``.<name>.partial``), a stage writes a linked copy of the bundle (``.<name>.next``), and each is
swapped in by one rename at the end (an atomic exchange of the two folders where the kernel has
``renameat2``), so a failed or killed run leaves the old state or the new, never a mix.
Everything here checks first and deletes last; nothing is deleted before the replacement is whole.
"""

from __future__ import annotations

import ctypes
import errno
import json
import os
import shutil
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from enum import Enum
from pathlib import Path

from core.bundle.schema import APP_FILES, BUNDLE_KIND, MANIFEST, PART_FILES, WORK_DIRS
from core.errors import BundleError

# written into a staging folder while a build is under way; says "an unfinished build of ours"
BUILD_MARKER = ".featurebridge-build"


@dataclass(frozen=True)
class OutputKind:
    """A kind of folder this tool writes, and the names it may hold.

    Attributes:
        label: what to call it in messages ("comparison bundle").
        manifest: the file whose ``kind`` key says the folder is ours.
        kind: that key's value.
        files: every file name the folder may hold (its manifest included).
        dirs: work folders it may hold (resumable state of an interrupted build).
    """

    label: str
    manifest: str
    kind: str
    files: frozenset[str]
    dirs: frozenset[str] = frozenset()


BUNDLE_OUTPUT = OutputKind(
    "comparison bundle",
    MANIFEST,
    BUNDLE_KIND,
    # the app's own files (named lists) are ours too: --overwrite may replace a bundle that has them
    frozenset({MANIFEST, *(f for files in PART_FILES.values() for f in files), *APP_FILES}),
    frozenset(WORK_DIRS),
)


class FolderState(str, Enum):
    """What a path holds, as far as the deletion policy cares."""

    ABSENT = "absent"
    EMPTY = "empty"
    FINISHED = "finished"  # a whole folder of ours
    UNFINISHED = "unfinished"  # an interrupted build of ours
    FOREIGN = "foreign"  # holds something we did not write
    FILE = "file"
    SYMLINK = "symlink"


@dataclass(frozen=True)
class FolderVerdict:
    """The state of a folder, with the first names that are not ours (for messages)."""

    state: FolderState
    foreign: tuple[str, ...] = ()
    reason: str = ""

    @property
    def removable(self) -> bool:
        """Whether the policy allows deleting it (empty, or entirely ours)."""
        return self.state in (FolderState.ABSENT, FolderState.EMPTY, FolderState.FINISHED, FolderState.UNFINISHED)


def _entry_is_ours(entry: os.DirEntry[str], kind: OutputKind) -> bool:
    if entry.is_symlink():
        return False  # we never write links, so one inside is the user's
    name = entry.name
    if entry.is_dir(follow_symlinks=False):
        return name in kind.dirs
    if name in kind.files or name == BUILD_MARKER:
        return True
    # the temp name of an interrupted atomic write (core.bundle.io)
    return name.startswith(".") and name.endswith(".tmp") and name[1:-4] in kind.files


def inspect_folder(path: str | Path, kind: OutputKind = BUNDLE_OUTPUT) -> FolderVerdict:
    """Classify what ``path`` holds; reads, never writes.

    Args:
        path: the folder.
        kind: which of our folder kinds counts as ours.

    Returns:
        The verdict.
    """
    path = Path(path)
    if path.is_symlink():
        return FolderVerdict(FolderState.SYMLINK)
    if not path.exists():
        return FolderVerdict(FolderState.ABSENT)
    if not path.is_dir():
        return FolderVerdict(FolderState.FILE)
    try:
        entries = list(os.scandir(path))
    except OSError as exc:
        return FolderVerdict(FolderState.FOREIGN, reason=f"it cannot be listed ({exc.strerror})")
    if not entries:
        return FolderVerdict(FolderState.EMPTY)
    foreign = sorted(e.name for e in entries if not _entry_is_ours(e, kind))
    if foreign:
        return FolderVerdict(FolderState.FOREIGN, tuple(foreign[:3]) + (("...",) if len(foreign) > 3 else ()))
    names = {e.name for e in entries}
    if kind.manifest in names:
        try:
            body = json.loads((path / kind.manifest).read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return FolderVerdict(
                FolderState.FOREIGN, reason=f"its {kind.manifest} is unreadable, so it may not be ours"
            )
        if isinstance(body, dict) and body.get("kind") == kind.kind:
            return FolderVerdict(FolderState.FINISHED)
        return FolderVerdict(FolderState.FOREIGN, reason=f"its {kind.manifest} was not written by this tool")
    if names & (set(kind.dirs) | {BUILD_MARKER}):
        return FolderVerdict(FolderState.UNFINISHED)
    # bundle-like names but neither a manifest nor a work marker: not provably ours
    return FolderVerdict(FolderState.FOREIGN, reason="it holds bundle-like files but no manifest or work marker")


def _inside_or_equal(inner: Path, outer: Path) -> bool:
    return inner == outer or outer in inner.parents


def _home_folders() -> set[Path]:
    homes = {_real(Path.home())}
    try:
        import pwd

        homes |= {_real(Path(entry.pw_dir)) for entry in pwd.getpwall() if entry.pw_dir not in ("", "/")}
    except (ImportError, OSError):
        pass
    return homes


def _real(path: Path) -> Path:
    try:
        return path.resolve()
    except (OSError, RuntimeError):
        return Path(os.path.abspath(path))


def check_output(
    out: str | Path | None,
    overwrite: bool = False,
    kind: OutputKind = BUNDLE_OUTPUT,
    inputs: Iterable[tuple[str, str | Path]] = (),
    flag: str = "--out",
) -> Path:
    """Check that ``out`` may receive a new folder of ``kind``; deletes and creates nothing.

    Args:
        out: the output path the user gave.
        overwrite: whether replacing a finished folder of ours is allowed.
        kind: the kind of folder to be written.
        inputs: (what, path) of the run's local inputs ("the SAE of side A", folder), which
            the output may never hold.
        flag: how the user named the output, for messages.

    Returns:
        The absolute output path (its last component not resolved).

    Raises:
        BundleError: the path is refused; the message says why and what to do.
    """
    if out is None or (isinstance(out, str) and not out.strip()):
        raise BundleError(f"The output folder is empty (an unset shell variable?); name a folder with {flag}.")
    path = Path(os.path.abspath(Path(out).expanduser()))
    if path.is_symlink():
        raise BundleError(
            f"Output {path} is a symbolic link; name the folder it points to, or a new folder, with {flag}."
        )
    real = _real(path)
    if real.parent == real:
        raise BundleError(f"Output {path} is a filesystem root; name a new folder below it with {flag}.")
    cwd = _real(Path.cwd())
    if _inside_or_equal(cwd, real):
        what = "the current folder" if cwd == real else "a folder above the current one"
        raise BundleError(
            f"Output {path} is {what}, which a build never replaces; name a new sub-folder such as "
            f"{path / 'bundle'} with {flag}."
        )
    for home in _home_folders():
        if _inside_or_equal(home, real):
            what = "a home folder" if home == real else "a folder above a home folder"
            raise BundleError(f"Output {path} is {what}; name a new sub-folder such as {path / 'bundle'} with {flag}.")
    for what, source in inputs:
        source_real = _real(Path(source).expanduser())
        if _inside_or_equal(source_real, real):
            relation = "is" if source_real == real else "holds"
            raise BundleError(f"Output {path} {relation} {what} ({source}); choose another folder with {flag}.")
    for parent in path.parents:
        if parent.exists() or parent.is_symlink():
            if not parent.is_dir():
                raise BundleError(
                    f"Output {path} cannot be made because {parent} is a file, not a folder; choose another {flag}."
                )
            break
    verdict = inspect_folder(path, kind)
    if verdict.state is FolderState.FILE:
        raise BundleError(f"Output {path} is a file, not a folder; choose another {flag}.")
    if verdict.state is FolderState.FOREIGN:
        detail = verdict.reason or f"it holds files this tool did not write ({', '.join(verdict.foreign)})"
        raise BundleError(
            f"Output {path} is not a {kind.label} this tool wrote: {detail}; --overwrite replaces only "
            f"such a {kind.label}, so choose an empty or new folder with {flag}."
        )
    if verdict.state is FolderState.FINISHED and not overwrite:
        raise BundleError(
            f"Output {path} already holds a {kind.label}; pass --overwrite to replace it (the old one stays "
            "whole until the new one is finished), or choose another folder."
        )
    return path


def staging_path(target: Path, role: str) -> Path:
    """The hidden sibling of ``target`` used while it is rebuilt (``partial``) or changed (``next``)."""
    return target.with_name(f".{target.name}.{role}")


def _write_marker(folder: Path, target: Path) -> None:
    body = {"pid": os.getpid(), "started": datetime.now().isoformat(timespec="seconds"), "target": str(target)}
    (folder / BUILD_MARKER).write_text(json.dumps(body))


def _clear_leftover(folder: Path, kind: OutputKind) -> None:
    """Remove a staging folder an earlier, killed run left, when the policy allows it; else refuse."""
    verdict = inspect_folder(folder, kind)
    if verdict.state is FolderState.ABSENT:
        return
    if not verdict.removable:
        raise BundleError(f"{folder} is in the way of this run and was not made by it; move it away and run again.")
    shutil.rmtree(folder)


def open_staging(target: Path, kind: OutputKind = BUNDLE_OUTPUT) -> Path:
    """Create (or resume) the staging folder a new build of ``target`` is written into.

    An earlier interrupted build's work folder is kept, wherever it is (the staging folder,
    or inside ``target`` as older versions left it); everything else the staging folder held
    is cleared, so no part of an earlier attempt leaks into the new folder.

    Args:
        target: the checked output path (see :func:`check_output`).
        kind: the kind of folder being built.

    Returns:
        The staging folder.
    """
    staging = staging_path(target, "partial")
    if staging.is_symlink():
        raise BundleError(f"{staging} is a symbolic link in the way of the build; remove it and run again.")
    if (staging / BUILD_MARKER).is_file() and inspect_folder(staging, kind).removable:
        for entry in list(staging.iterdir()):
            if entry.name not in kind.dirs and entry.name != BUILD_MARKER:
                shutil.rmtree(entry) if entry.is_dir() and not entry.is_symlink() else entry.unlink()
    else:
        _clear_leftover(staging, kind)
        staging.mkdir(parents=True)
    _write_marker(staging, target)
    if inspect_folder(target, kind).state is FolderState.UNFINISHED:
        for name in kind.dirs:
            if (target / name).is_dir() and not (staging / name).exists():
                os.rename(target / name, staging / name)
    return staging


def _renameat2_exchange(a: Path, b: Path) -> bool:
    """Swap two folders atomically (Linux ``renameat2(RENAME_EXCHANGE)``); False where unsupported."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        func = libc.renameat2
    except (OSError, AttributeError):
        return False
    func.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_uint]
    at_fdcwd, rename_exchange = -100, 2
    if func(at_fdcwd, os.fsencode(a), at_fdcwd, os.fsencode(b), rename_exchange) == 0:
        return True
    code = ctypes.get_errno()
    if code in (errno.EINVAL, errno.ENOSYS, errno.ENOTSUP, errno.EOPNOTSUPP):
        return False
    raise OSError(code, os.strerror(code), str(b))


def replace_folder(new: Path, target: Path, kind: OutputKind = BUNDLE_OUTPUT, keep_marker: bool = False) -> None:
    """Put the whole folder ``new`` where ``target`` is, then delete the old ``target``.

    The target is checked again right before (it may have changed during a long run) and must
    be absent, empty or ours; otherwise nothing moves and the new folder stays where it is.

    Args:
        new: the finished replacement (a sibling of ``target``).
        target: the folder to replace.
        kind: the kind of folder.
        keep_marker: keep the build marker (the target is itself a staging folder of a build).
    """
    verdict = inspect_folder(target, kind)
    if not verdict.removable:
        raise BundleError(
            f"{target} changed during the run and now holds files this tool did not write; the new {kind.label} "
            f"is kept whole at {new}: move it into place yourself."
        )
    if not keep_marker:
        (new / BUILD_MARKER).unlink(missing_ok=True)
    if verdict.state is FolderState.ABSENT:
        os.rename(new, target)
        return
    if verdict.state is FolderState.EMPTY:
        os.rmdir(target)
        os.rename(new, target)
        return
    if _renameat2_exchange(new, target):
        shutil.rmtree(new)  # it holds the old folder now
        return
    old = staging_path(target, "old")
    _clear_leftover(old, kind)
    os.rename(target, old)
    os.rename(new, target)
    shutil.rmtree(old)


def _link_or_copy(src: str, dst: str) -> str:
    try:
        os.link(src, dst)
    except OSError:
        shutil.copy2(src, dst)  # a file system without hard links: a real copy
    return dst


def copy_for_change(bundle: Path, skip: Sequence[str], kind: OutputKind = BUNDLE_OUTPUT) -> Path:
    """A staging copy of ``bundle`` made of hard links (cheap), leaving out the files in ``skip``.

    Writers only ever replace files (temp name, then rename), never write into one, so the
    linked copy can be changed without touching the bundle it came from.

    Args:
        bundle: the bundle folder.
        skip: file names the change rewrites (not linked).
        kind: the kind of folder.

    Returns:
        The staging folder ``.<name>.next``.
    """
    staging = staging_path(bundle, "next")
    _clear_leftover(staging, kind)
    staging.mkdir()
    # a fresh marker, never a link to the bundle's own (writing through a link would change both)
    _write_marker(staging, bundle)
    for entry in bundle.iterdir():
        if entry.name in skip or entry.name == BUILD_MARKER:
            continue
        if entry.is_dir() and not entry.is_symlink():
            shutil.copytree(entry, staging / entry.name, copy_function=_link_or_copy)
        else:
            _link_or_copy(str(entry), str(staging / entry.name))
    return staging


def discard(folder: Path, kind: OutputKind = BUNDLE_OUTPUT) -> None:
    """Delete a staging folder of ours after a failure (never anything the policy protects).

    Our build marker alone does not make a folder removable: a file of the user's found in it
    (however it got there) keeps the whole folder.
    """
    try:
        if inspect_folder(folder, kind).removable:
            shutil.rmtree(folder, ignore_errors=True)
    except OSError:
        pass


def inputs_of(paths: Iterable[tuple[str, str | Path | None]]) -> list[tuple[str, str | Path]]:
    """Keep the (what, path) pairs that name something on this machine (hub ids and packages are skipped)."""
    return [(what, path) for what, path in paths if path and Path(path).expanduser().exists()]
