"""Derived parts record the assignment they were built from; re-running matching marks them stale."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from core.bundle.provenance import file_digest, input_digests, stale_parts
from core.bundle.reader import open_bundle
from core.cli.main import main
from core.embedding.stage import build_umap
from core.matching.settings import MatchSettings
from core.matching.stage import build_matching
from core.spaces.settings import SimilaritySettings
from core.spaces.stage import build_similarity
from tests.core.planted import build_planted_config, make_planted, write_bundle

SIM = SimilaritySettings(n_null=20, n_boot=0, concepts=False)


@pytest.fixture()
def built(tmp_path: Path) -> Path:
    """A 4 x 4 planted bundle with matching, similarity and UMAP (4 rows: the UMAP stage's PCA path, fast)."""
    cfg = build_planted_config(
        n_shared=4,
        n_split_hubs=0,
        n_orphans_a=0,
        n_orphans_b=0,
        n_dead_a=0,
        n_dead_b=0,
        n_always_on_a=0,
        n_always_on_b=0,
        n_constant_b=0,
    )
    p = make_planted(cfg)
    path = write_bundle(tmp_path / "bundle", p.codes_a, p.codes_b, p.docs, p.w_dec_a, p.w_dec_b)
    build_matching(path, MatchSettings(top_k=3), device="cpu")
    build_similarity(path, SIM, device="cpu")
    build_umap(path)
    return path


def test_file_digest_is_sha256_of_the_bytes(tmp_path: Path) -> None:
    import hashlib

    f = tmp_path / "x.bin"
    f.write_bytes(b"feature bridge")
    assert file_digest(f) == "sha256:" + hashlib.sha256(b"feature bridge").hexdigest()
    assert input_digests(tmp_path, ["x.bin", "absent.parquet"]) == {"x.bin": file_digest(f)}


def test_rerunning_matching_marks_similarity_and_umap_stale_until_rebuilt(built: Path, capsys) -> None:
    bundle = open_bundle(built)
    digest = file_digest(built / "assignment.parquet")
    assert bundle.manifest["similarity"]["built_from"] == {"assignment.parquet": digest}
    assert bundle.manifest["umap"]["built_from"] == {"assignment.parquet": digest}
    assert stale_parts(bundle) == []
    # the same settings write the same bytes: nothing goes stale
    assert stale_parts(build_matching(built, MatchSettings(top_k=3), device="cpu")) == []
    # another method and threshold rewrite the assignment: both dependants are stale, with their commands
    assert (
        main(["match", str(built), "--top-k", "3", "--method", "hungarian", "--min-corr", "0.5", "--device", "cpu"])
        == 0
    )
    out = capsys.readouterr().out
    assert f"rebuild: python -m core similarity {built}" in out and f"rebuild: python -m core umap {built}" in out
    stale = stale_parts(open_bundle(built))
    assert [s.section for s in stale] == ["similarity", "umap"]
    assert all(s.changed == ("assignment.parquet",) for s in stale)
    assert main(["info", str(built)]) == 0
    assert capsys.readouterr().out.count("STALE") == 2
    # rebuilding one clears it, and only it
    build_similarity(built, SIM, device="cpu")
    assert [s.section for s in stale_parts(open_bundle(built))] == ["umap"]
    build_umap(built)
    assert stale_parts(open_bundle(built)) == []
    assert main(["info", str(built)]) == 0
    assert "STALE" not in capsys.readouterr().out


def test_a_bundle_written_before_the_record_is_judged_by_its_pair_count(built: Path) -> None:
    manifest = json.loads((built / "manifest.json").read_text())
    del manifest["similarity"]["built_from"]
    del manifest["umap"]["built_from"]
    (built / "manifest.json").write_text(json.dumps(manifest))
    assert stale_parts(open_bundle(built)) == []  # 4 pairs computed, 4 kept
    manifest["similarity"]["n_pairs"] = 706
    (built / "manifest.json").write_text(json.dumps(manifest))
    (stale,) = stale_parts(open_bundle(built))
    assert stale.section == "similarity" and "706 pairs" in stale.reason and "keeps 4" in stale.reason
    # an aligned UMAP is judged by its relation count (this 4-row one fell back to PCA: not aligned, no verdict)
    manifest["umap"].update(aligned=True, n_relations=706)
    (built / "manifest.json").write_text(json.dumps(manifest))
    assert [s.section for s in stale_parts(open_bundle(built))] == ["similarity", "umap"]
    manifest["umap"]["n_relations"] = 4
    (built / "manifest.json").write_text(json.dumps(manifest))
    assert [s.section for s in stale_parts(open_bundle(built))] == ["similarity"]
