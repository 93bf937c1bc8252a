"""Home page: open a folder, a recent bundle, bad folders, and the build form's checks."""

from __future__ import annotations

from pathlib import Path

from tests.pages.conftest import no_exception, open_app, texts


def test_home_renders_without_a_bundle() -> None:
    at = open_app()
    no_exception(at)
    assert at.title[0].value == "Feature Bridge"
    assert any(b.label == "Build comparison" for b in at.button) or at.get("form_submit_button")


def test_open_a_bundle_folder_switches_to_overview(app_bundle: Path) -> None:
    at = open_app()
    at.text_input[0].set_value(str(app_bundle))
    at.button(key="open-folder").click().run()
    no_exception(at)
    state = at.session_state["featurebridge_state"]
    assert state.bundle_path == str(app_bundle)
    assert state.recent[0] == str(app_bundle)
    assert at.title[0].value == "Overview"


def test_a_folder_that_is_not_a_bundle_is_a_clear_error(tmp_path: Path) -> None:
    at = open_app()
    at.text_input[0].set_value(str(tmp_path))
    at.button(key="open-folder").click().run()
    no_exception(at)
    assert any("manifest.json" in e for e in texts(at, "error"))
    assert at.session_state["featurebridge_state"].bundle_path is None


def test_empty_folder_field_asks_for_a_path() -> None:
    at = open_app()
    at.button(key="open-folder").click().run()
    assert any("Type the path" in e for e in texts(at, "error"))


def test_recent_bundles_are_listed_and_open(app_bundle: Path) -> None:
    at = open_app(recent=(str(app_bundle),))
    at.button(key="recent-0").click().run()
    no_exception(at)
    assert at.session_state["featurebridge_state"].bundle_path == str(app_bundle)


def test_build_form_refuses_missing_fields_and_impossible_combinations(tmp_path: Path) -> None:
    at = open_app()
    submit = at.get("form_submit_button")
    assert submit, "the build form is missing"
    # nothing filled in
    at.button(key="FormSubmitter:build-form-Build comparison").click().run()
    assert any("Fill in" in e for e in texts(at, "error"))
    # similarity without matching
    for key, value in {
        "model-a": "hf:x",
        "sae-a": "local:y",
        "model-b": "hf:x",
        "sae-b": "local:z",
    }.items():
        at.text_input(key=key).set_value(value)
    at.text_input[-1].set_value(str(tmp_path / "out"))
    at.multiselect[0].set_value(["similarity"])
    at.button(key="FormSubmitter:build-form-Build comparison").click().run()
    no_exception(at)
    assert any("matching stage" in e for e in texts(at, "error"))


def test_build_form_shows_a_user_error_not_a_traceback(tmp_path: Path) -> None:
    at = open_app()
    for key, value in {
        "model-a": str(tmp_path / "no-model"),
        "sae-a": str(tmp_path / "no-sae"),
        "model-b": str(tmp_path / "no-model"),
        "sae-b": str(tmp_path / "no-sae"),
    }.items():
        at.text_input(key=key).set_value(value)
    at.text_input[-1].set_value(str(tmp_path / "out"))
    at.button(key="FormSubmitter:build-form-Build comparison").click().run()
    no_exception(at)
    assert texts(at, "error"), "a missing model folder should be reported on the page"


def test_build_form_takes_a_crosscoder_instead_of_two_saes(tmp_path: Path) -> None:
    at = open_app()
    at.text_input(key="model-a").set_value("hf:x")
    at.text_input(key="model-b").set_value("hf:x")
    at.text_input(key="sae-a").set_value("local:y")
    at.text_input(key="crosscoder").set_value(str(tmp_path / "ckpt"))
    at.text_input[-1].set_value(str(tmp_path / "out"))
    at.button(key="FormSubmitter:build-form-Build comparison").click().run()
    no_exception(at)
    assert any("Leave SAE A and SAE B empty" in e for e in texts(at, "error"))
    at.text_input(key="sae-a").set_value("")
    at.button(key="FormSubmitter:build-form-Build comparison").click().run()
    no_exception(at)
    # the same call as compare --crosscoder: a missing checkpoint is one sentence, and nothing is written
    errors = texts(at, "error")
    assert any("does not exist" in e for e in errors) or any("Could not load model" in e for e in errors), errors
    assert not (tmp_path / "out").exists()


def test_home_offers_the_crosscoder_demo() -> None:
    at = open_app()
    no_exception(at)
    assert any(s.value == "Crosscoder demo" for s in at.subheader)
    assert any(b.key in ("open-crosscoder", "build-crosscoder") for b in at.button)
