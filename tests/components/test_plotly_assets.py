"""The two plotly.js builds: the app's own (only the trace types the app draws) stands in for the full
bundle only when it was built from the installed plotly.js and is whole, and it carries every trace
type the app's figure code draws."""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path

import pytest
from plotly.offline import get_plotlyjs_version

from components import plotly_assets

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(autouse=True)
def _fresh_manifest(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setattr(plotly_assets, "file_route", lambda name, folder, filename: f"/{name}/{filename}")
    plotly_assets.app_bundle_manifest.cache_clear()
    yield
    plotly_assets.app_bundle_manifest.cache_clear()


def _copy_bundle(tmp_path: Path, **manifest_overrides: object) -> Path:
    js = (plotly_assets.APP_BUNDLE_DIR / plotly_assets.APP_BUNDLE).read_bytes()
    (tmp_path / plotly_assets.APP_BUNDLE).write_bytes(js)
    manifest = {"plotly_js": get_plotlyjs_version(), "traces": list(plotly_assets.APP_TRACES)}
    manifest["sha256"] = hashlib.sha256(js).hexdigest()
    manifest.update(manifest_overrides)
    (tmp_path / plotly_assets.APP_MANIFEST).write_text(json.dumps(manifest))
    return tmp_path


def test_the_shipped_build_stands_in_exactly_when_the_installed_plotly_js_is_the_one_it_was_built_from() -> None:
    shipped = json.loads((plotly_assets.APP_BUNDLE_DIR / plotly_assets.APP_MANIFEST).read_text())
    assert tuple(shipped["traces"]) == plotly_assets.APP_TRACES, "rebuild: scripts/build_plotly_bundle.sh"
    source = plotly_assets.plotly_source()
    assert source["full"].startswith("/plotlyjs/plotly.min.js?v=")
    if shipped["plotly_js"] == get_plotlyjs_version():
        assert source["app"] == f"/plotlyapp/plotly-app.min.js?v={shipped['sha256'][:12]}"
        assert source["traces"] == list(plotly_assets.APP_TRACES)
    else:  # another plotly is installed: the full bundle draws everything until the build is rerun
        assert source == {"full": source["full"], "app": None, "traces": []}


def test_a_build_of_another_plotly_js_or_a_damaged_file_falls_back_to_the_full_bundle(tmp_path, monkeypatch) -> None:
    monkeypatch.setattr(plotly_assets, "APP_BUNDLE_DIR", _copy_bundle(tmp_path))
    assert plotly_assets.plotly_source()["app"] is not None

    plotly_assets.app_bundle_manifest.cache_clear()
    _copy_bundle(tmp_path, plotly_js="0.0.1")
    assert plotly_assets.plotly_source() == {"full": plotly_assets.plotly_js_url(), "app": None, "traces": []}

    plotly_assets.app_bundle_manifest.cache_clear()
    _copy_bundle(tmp_path)
    with (tmp_path / plotly_assets.APP_BUNDLE).open("ab") as f:
        f.write(b"/* changed */")
    assert plotly_assets.plotly_source()["app"] is None

    plotly_assets.app_bundle_manifest.cache_clear()
    (tmp_path / plotly_assets.APP_MANIFEST).unlink()
    assert plotly_assets.plotly_source()["app"] is None


def test_the_app_figure_code_draws_only_trace_types_the_app_build_carries() -> None:
    # every trace the app makes is built with a graph_objects trace class in components/ or pages/
    # (the linked maps' payload takes its specs from components.figures)
    layout_classes = {"Figure", "Layout", "FigureWidget"}
    found: dict[str, set[str]] = {}
    for path in [*ROOT.glob("components/*.py"), *ROOT.glob("pages/*.py")]:
        for name in re.findall(r"\bgo\.([A-Z][A-Za-z0-9]*)\b", path.read_text()):
            if name not in layout_classes and not name.startswith("layout"):
                found.setdefault(name.lower(), set()).add(path.name)
    assert found, "the scan found no trace classes: the pattern no longer matches the code"
    assert {"scatter", "scattergl", "heatmap", "bar", "histogram"} <= set(found)
    missing = {t: sorted(files) for t, files in found.items() if t not in plotly_assets.APP_TRACES}
    assert not missing, f"add these to APP_TRACES and run scripts/build_plotly_bundle.sh: {missing}"
    # and plotly express, which picks trace types itself, is not used
    for path in [*ROOT.glob("components/*.py"), *ROOT.glob("pages/*.py")]:
        assert "plotly.express" not in path.read_text(), path
