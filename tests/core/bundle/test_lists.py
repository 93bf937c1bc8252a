"""Named lists persist beside the bundle: save, replace, rename, delete, and bad input as one sentence."""

from __future__ import annotations

import json
import threading
from pathlib import Path

import pytest

from core.bundle.lists import (
    delete_named_list,
    lists_path,
    load_named_lists,
    rename_named_list,
    save_named_list,
)
from core.errors import BundleError


def test_save_reload_replace_rename_delete(tmp_path: Path) -> None:
    assert load_named_lists(tmp_path) == {}
    saved = save_named_list(tmp_path, "  numbers  list ", [(1, 2), (3, None), (1, 2)], note="digits")
    assert saved.name == "numbers list" and saved.pairs == ((1, 2), (3, None))  # duplicates dropped, order kept
    save_named_list(tmp_path, "colours", [(5, 6)])
    again = load_named_lists(tmp_path)
    assert list(again) == ["numbers list", "colours"] and again["numbers list"].note == "digits"
    body = json.loads(lists_path(tmp_path).read_text())
    assert body["lists"][0]["name"] == "numbers list" and body["lists"][0]["pairs"] == [[1, 2], [3, None]]
    replaced = save_named_list(tmp_path, "numbers list", [(7, 8)])
    assert replaced.pairs == ((7, 8),) and replaced.created_at == saved.created_at
    rename_named_list(tmp_path, "numbers list", "digits")
    assert list(load_named_lists(tmp_path)) == ["digits", "colours"]  # the renamed list keeps its place
    delete_named_list(tmp_path, "digits")
    delete_named_list(tmp_path, "not there")
    assert list(load_named_lists(tmp_path)) == ["colours"]


def test_bad_names_and_files_are_one_sentence_errors(tmp_path: Path) -> None:
    with pytest.raises(BundleError, match="needs a name"):
        save_named_list(tmp_path, "   ", [(1, 2)])
    with pytest.raises(BundleError, match="empty"):
        save_named_list(tmp_path, "x", [])
    save_named_list(tmp_path, "a", [(1, 2)])
    save_named_list(tmp_path, "b", [(1, 2)])
    with pytest.raises(BundleError, match="exists already"):
        rename_named_list(tmp_path, "a", "b")
    with pytest.raises(BundleError, match="no list called"):
        rename_named_list(tmp_path, "zzz", "c")
    with pytest.raises(BundleError, match="does not exist"):
        save_named_list(tmp_path / "gone", "a", [(1, 2)])
    lists_path(tmp_path).write_text("{not json")
    with pytest.raises(BundleError, match="not a readable list file"):
        load_named_lists(tmp_path)


def test_concurrent_saves_lose_nothing(tmp_path: Path) -> None:
    threads = [threading.Thread(target=save_named_list, args=(tmp_path, f"list {i}", [(i, i)])) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(load_named_lists(tmp_path)) == sorted(f"list {i}" for i in range(8))


def test_a_stage_run_keeps_the_lists_and_a_save_waits_out_no_stage(tmp_path: Path, monkeypatch) -> None:
    import polars as pl

    from core.bundle import lists as lists_module
    from core.bundle.lock import BundleBusyError, bundle_lock
    from core.bundle.safety import FolderState, inspect_folder
    from core.bundle.writer import add_parts
    from tests.core._tiny_bundle import ASSIGNMENT, planted_comet, write_bundle

    texts, a, b = planted_comet()
    bundle = write_bundle(tmp_path / "b", texts, a, b, assignment=ASSIGNMENT)
    save_named_list(bundle, "kept", [(3, 2)])
    # a stage swaps in a linked copy of the folder: the lists travel with it
    add_parts(bundle, frames={"assignment.parquet": ASSIGNMENT.with_columns(pl.lit(0.5).alias("corr"))})
    assert list(load_named_lists(bundle)) == ["kept"]
    # the app's files are ours: an --overwrite may replace a bundle that holds them
    assert inspect_folder(bundle).state == FolderState.FINISHED
    # while another thread writes the bundle, a save reports it instead of writing into a folder being swapped
    monkeypatch.setattr(lists_module, "BUSY_RETRIES", 2)
    monkeypatch.setattr(lists_module, "BUSY_WAIT_S", 0.01)
    errors: list[Exception] = []
    hold, done = threading.Event(), threading.Event()

    def writer() -> None:
        with bundle_lock(bundle):
            hold.set()
            done.wait(10)

    t = threading.Thread(target=writer)
    t.start()
    hold.wait(10)
    try:
        save_named_list(bundle, "late", [(1, 1)])
    except BundleBusyError as exc:
        errors.append(exc)
    finally:
        done.set()
        t.join()
    assert errors and "wait for it to finish" in str(errors[0])
    assert list(load_named_lists(bundle)) == ["kept"]
