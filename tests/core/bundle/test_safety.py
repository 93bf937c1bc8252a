"""The deletion policy (core.bundle.safety) over random existing trees: nothing that is not ours is ever removed.

Hypothesis draws a tree (user files, SAE folders, bundles we wrote, unfinished builds of ours,
bundles with a user's file added, symbolic links in and out of the tree, empty folders), a
working folder and a home inside it, and an output path as a careless user would type it
(an existing path, a new one, "", ".", "..", "~", a path below a file, relative or absolute),
with or without --overwrite. The output path goes through what `compare` does with it
(:class:`~core.bundle.writer.OutputBuild`: check, lock, stage beside, commit), with a fake
build writing a small bundle. Everything is inside a temporary folder this test made, and
every deleting call is recorded as well.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from core.bundle.safety import BUILD_MARKER, FolderState, check_output, inspect_folder, staging_path
from core.bundle.schema import BUNDLE_KIND, MANIFEST
from core.bundle.writer import OutputBuild, prepare_output_dir
from core.errors import BundleError
from tests.core._guard import tree_hash

KINDS = ("file", "sae", "bundle", "unfinished", "bundle_plus_user_file", "empty_dir", "dir", "link_file", "link_dir")


def _write_bundle(folder: Path, note: str = "") -> None:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "units.parquet").write_bytes(b"units " + note.encode())
    (folder / "codes_a.safetensors").write_bytes(b"codes")
    (folder / MANIFEST).write_text(json.dumps({"kind": BUNDLE_KIND, "schema_version": 1, "note": note}))


def _make(root: Path, rel: str, kind: str, n: int, outside: Path) -> None:
    path = root / rel
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError:
        return  # a file (or a link to one) is in the way: the tree keeps what it has
    if path.exists() or path.is_symlink():
        return
    if kind == "file":
        path.write_text(f"user data {n}")
    elif kind == "sae":
        path.mkdir()
        (path / "cfg.json").write_text(json.dumps({"d_in": 4, "d_sae": 8}))
        (path / "sae_weights.safetensors").write_bytes(b"weights")
    elif kind == "bundle":
        _write_bundle(path, str(n))
    elif kind == "unfinished":
        (path / ".work" / "shards").mkdir(parents=True)
        (path / ".work" / "shards" / "00000.safetensors").write_bytes(b"shard")
    elif kind == "bundle_plus_user_file":
        _write_bundle(path, str(n))
        (path / "my_notes.md").write_text("the user's own file inside a bundle")
    elif kind == "empty_dir":
        path.mkdir()
    elif kind == "dir":
        (path / "inner").mkdir(parents=True)
        (path / "inner" / "data.csv").write_text("a,b\n1,2\n")
    elif kind == "link_file":
        os.symlink(outside / "target.txt", path)
    elif kind == "link_dir":
        os.symlink(outside, path, target_is_directory=True)


NAMES = st.sampled_from(["a", "b", "c", "bundle", "out", "home", "work", "x y"])
RELS = st.lists(NAMES, min_size=1, max_size=3).map("/".join)
ENTRIES = st.lists(st.tuples(RELS, st.sampled_from(KINDS)), min_size=1, max_size=10)
# "entry": one of the drawn entries (a bundle, an SAE, a link, ...), the likeliest slip
OUT_FORMS = st.sampled_from(
    ["entry", "entry", "entry", "existing", "new_below", "relative", "", ".", "..", "~", "~/sub", "below_file"]
)


@contextmanager
def _recorded_deletions() -> Iterator[list[str]]:
    """Record every path a deleting function is called on (they still run, under the session's guard)."""
    seen: list[str] = []
    saved = {name: getattr(os, name) for name in ("unlink", "remove", "rmdir")}
    saved_rmtree = shutil.rmtree

    def wrap(func):  # type: ignore[no-untyped-def]
        def call(path, *args, **kwargs):  # type: ignore[no-untyped-def]
            if kwargs.get("dir_fd") is None:
                seen.append(os.path.abspath(os.fsdecode(path)))
            return func(path, *args, **kwargs)

        return call

    for name, func in saved.items():
        setattr(os, name, wrap(func))
    shutil.rmtree = wrap(saved_rmtree)  # type: ignore[assignment]
    try:
        yield seen
    finally:
        for name, func in saved.items():
            setattr(os, name, func)
        shutil.rmtree = saved_rmtree  # type: ignore[assignment]


def _fake_build(build: OutputBuild, note: str) -> None:
    with build:
        (build.staging / ".work").mkdir(exist_ok=True)
        _write_bundle(build.staging, note)
        shutil.rmtree(build.staging / ".work")
        build.commit()


def _ours(path: Path) -> bool:
    """What the policy may remove at the output: nothing, or a folder wholly ours."""
    return inspect_folder(path).state in (
        FolderState.ABSENT,
        FolderState.EMPTY,
        FolderState.FINISHED,
        FolderState.UNFINISHED,
    )


@pytest.fixture(scope="module")
def scratch(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("trees")


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    entries=ENTRIES,
    cwd_pick=st.integers(0, 20),
    home_pick=st.integers(0, 20),
    out_form=OUT_FORMS,
    out_pick=st.integers(0, 20),
    overwrite=st.booleans(),
    use_inputs=st.booleans(),
)
def test_nothing_that_is_not_ours_is_ever_removed(
    scratch: Path,
    entries: list[tuple[str, str]],
    cwd_pick: int,
    home_pick: int,
    out_form: str,
    out_pick: int,
    overwrite: bool,
    use_inputs: bool,
) -> None:
    base = Path(tempfile.mkdtemp(dir=scratch))  # made here, removed here: nothing else is ever deleted by the test
    root, outside = base / "tree", base / "outside"
    (outside / "kept").mkdir(parents=True)
    (outside / "target.txt").write_text("outside the tree")
    for n, (rel, kind) in enumerate(entries):
        _make(root, rel, kind, n, outside)
    folders = sorted({root, *(p for p in root.rglob("*") if p.is_dir() and not p.is_symlink())})
    paths = sorted({*folders, *root.rglob("*")})
    cwd = folders[cwd_pick % len(folders)]
    home = folders[home_pick % len(folders)]
    picked = paths[out_pick % len(paths)]
    out = {
        "entry": str(root / entries[out_pick % len(entries)][0]),
        "existing": str(picked),
        "new_below": str(folders[out_pick % len(folders)] / "new_bundle"),
        "relative": os.path.relpath(root / entries[out_pick % len(entries)][0], cwd),
        "below_file": str(picked / "bundle"),
    }.get(out_form, out_form)
    inputs = [(f"the SAE {p.name}", p) for p in paths if (p / "cfg.json").is_file()] if use_inputs else []
    before = tree_hash(base)
    old_cwd, old_home = Path.cwd(), os.environ.get("HOME")
    os.chdir(cwd)
    os.environ["HOME"] = str(home)
    try:
        target: Path | None = None
        try:
            target = check_output(out, overwrite, inputs=inputs)
            allowed = _ours(target)
            event(f"output was {inspect_folder(target).state.value}")
        except BundleError:
            allowed = False
        with _recorded_deletions() as deleted:
            try:
                _fake_build(OutputBuild(out, overwrite, inputs=inputs), "new")
                built = True
            except BundleError:
                built = False
    finally:
        os.chdir(old_cwd)
        if old_home is None:
            os.environ.pop("HOME", None)
        else:
            os.environ["HOME"] = old_home
    after = tree_hash(base)
    event("built" if built else "refused")
    assert built == allowed, "OutputBuild refuses exactly what check_output refuses"
    if not built:
        assert after == before, "a refused output changes nothing anywhere"
    else:
        assert target is not None
        # the output as named and as it resolves (a symlinked parent puts it elsewhere in the tree)
        rel_targets = {str(target.relative_to(base))}
        if target.resolve().is_relative_to(base.resolve()):
            rel_targets.add(str(target.resolve().relative_to(base.resolve())))
        for rel, digest in before.items():
            if any(rel == t or rel.startswith(t + "/") for t in rel_targets):
                continue  # the replaced folder: it was wholly ours (checked above)
            assert after.get(rel) == digest, f"{rel} changed though it is not the output"
        assert json.loads((target / MANIFEST).read_text())["note"] == "new"
        assert not (target / BUILD_MARKER).exists()
        siblings = {staging_path(target, r) for r in ("partial", "next", "old")} | {
            target.with_name(f".{target.name}.lock")
        }
        assert not any(p.exists() for p in siblings), "nothing is left beside the new bundle"
        mine = (target, *siblings)
        for path in map(Path, deleted):
            assert any(path == m or m in path.parents for m in mine), f"deleted {path}, which is not ours"
    assert (outside / "target.txt").read_text() == "outside the tree" and (outside / "kept").is_dir()
    shutil.rmtree(base)


def test_prepare_output_dir_keeps_resumable_work_and_refuses_what_is_not_ours(tmp_path: Path) -> None:
    out = tmp_path / "out"
    (out / ".work").mkdir(parents=True)
    assert prepare_output_dir(out) == out and (out / ".work").is_dir()
    (out / "x.txt").write_text("user file")
    for overwrite in (False, True):
        with pytest.raises(BundleError, match="did not write"):
            prepare_output_dir(out, overwrite=overwrite)
    assert (out / "x.txt").read_text() == "user file"
    bundle = tmp_path / "b"
    _write_bundle(bundle)
    (bundle / ".work").mkdir()
    with pytest.raises(BundleError, match="already holds a comparison bundle"):
        prepare_output_dir(bundle)
    prepare_output_dir(bundle, overwrite=True)
    assert [p.name for p in bundle.iterdir()] == [".work"], "our files go, the resumable work folder stays"
