"""Home: the demos (built in the background, with progress), a bundle folder, a recent bundle, a new comparison."""

from __future__ import annotations

from pathlib import Path

import streamlit as st

from components import builds
from components.cache import cached_bundle
from components.state import get_state
from components.widgets import make_progress, render_build_form, render_build_progress
from core.errors import UserError

DEMO_CAPTIONS = {
    "demo": "Two sentence-embedding MiniLMs on the fortunes text, one TopK SAE each (shipped with the project, "
    "trained by its recipe). The default demo.",
    "family": "Two model families and two tokenizers, aligned on common character cuts; SmolLM2 is a causal LM, "
    "so its features carry logit effects.",
    "sweep": "Three depths of each MiniLM, every layer pair matched and compared (the Heatmaps page shows it).",
}


def _open(path: Path) -> None:
    state.open(str(path))
    st.switch_page("pages/overview.py")


def _demo_card(name: str) -> None:
    """One demo: open it, or build it in the background; a running build redraws itself (``_live_card``)."""
    status = builds.read_build(builds.demo_jobs()[name])
    if status is not None and status.running:
        _live_card(name)
    else:
        _card_body(name, status)


@st.fragment(run_every=1.5)
def _live_card(name: str) -> None:
    """A demo card while its build runs, redrawn every 1.5 s; the whole page reruns once the build stops."""
    status = builds.read_build(builds.demo_jobs()[name])
    if status is None or not status.running:
        st.rerun()
    _card_body(name, status)


def _card_body(name: str, status: builds.BuildStatus | None) -> None:
    job = builds.demo_jobs()[name]
    ready = builds.bundle_complete(job.bundle) if name != "sweep" else _has_sweep(job.bundle)
    st.subheader(job.title)
    st.caption(DEMO_CAPTIONS[name])
    if status is not None and status.running:
        render_build_progress(status)
        if builds.bundle_opens(job.bundle) and name != "sweep":
            st.caption("Pages light up as their parts land; open it now to browse what is built.")
            if st.button("Open what is built so far", key=f"open-partial-{name}"):
                _open(job.bundle)
        return
    if status is not None and status.state == "failed":
        st.error(f"The last build stopped: {status.error}")
        if builds.bundle_opens(job.bundle):
            st.caption("The stages it finished are in the bundle and can be opened.")
            if st.button("Open what was built", key=f"open-failed-{name}"):
                _open(job.bundle)
    if ready:
        if st.button("Open", type="primary" if name == "demo" else "secondary", key=f"open-{name}"):
            _open(job.bundle)
        return
    label = "Build again" if status is not None and status.state == "failed" else "Build in the background"
    if st.button(f"{label} ({job.about})", key=f"build-{name}"):
        builds.start_build(job)
        st.rerun()


def _has_sweep(path: Path) -> bool:
    if not builds.bundle_opens(path):
        return False
    bundle = cached_bundle(str(path))
    return bundle.has("similarity") and bool(bundle.similarity_json().get("sweep"))


state = get_state()
st.title("Feature Bridge")
st.write("Match and compare the features of two sparse autoencoders: across models, layers or sizes.")
if state.bundle_path:
    st.success(f"Open bundle: `{state.bundle_path}`")
    st.page_link("pages/overview.py", label="Go to its Overview", icon=":material/dashboard:")

left, right = st.columns(2)
with left:
    st.header("Demos")
    for job_name in builds.demo_jobs():
        _demo_card(job_name)

    st.subheader("Crosscoder demo")
    st.caption(
        "One BatchTopK crosscoder trained here over both MiniLMs at once: which latents are shared, A-only or "
        "B-only, and do shared latents act alike in both models (the causal check)."
    )
    from core.demo.crosscoder import build_crosscoder_demo, crosscoder_demo_bundle_path

    crosscoder_path = crosscoder_demo_bundle_path()
    if (crosscoder_path / "manifest.json").is_file():
        if st.button("Open the crosscoder demo", key="open-crosscoder"):
            state.open(str(crosscoder_path))
            st.switch_page("pages/model_diffing.py")
    else:
        st.info("Not built yet (minutes on 2 CPU cores, once; or `python -m core demo --pair crosscoder`).")
        if st.button("Build the crosscoder demo", key="build-crosscoder"):
            progress = make_progress()
            try:
                state.open(str(build_crosscoder_demo(progress=progress)))
            except UserError as exc:
                st.error(str(exc))
            else:
                st.switch_page("pages/model_diffing.py")

with right:
    st.header("Open a bundle folder")
    folder = st.text_input("Bundle folder", placeholder="/path/to/bundle (written by python -m core compare)")
    if st.button("Open", key="open-folder"):
        if not folder.strip():
            st.error("Type the path of a bundle folder first.")
        else:
            path = str(Path(folder.strip()).expanduser())
            try:
                cached_bundle(path)
            except UserError as exc:
                st.error(str(exc))
            else:
                state.open(path)
                st.switch_page("pages/overview.py")
    if state.recent:
        st.subheader("Recent")
        for i, path in enumerate(state.recent):
            if st.button(path, key=f"recent-{i}"):
                state.open(path)
                st.switch_page("pages/overview.py")

st.header("Build a new comparison")
st.caption(
    "Runs the same code as `python -m core compare`, then the chosen stages. Cancel stops after the "
    "current step; finished harvest shards are kept, so building again resumes."
)
values = render_build_form()
if values:
    st.button("Cancel build", key="cancel-build")  # clicking reruns the page, which interrupts the build
    progress = make_progress()
    crosscoder = bool(values["crosscoder"].strip())
    try:
        import core  # the Python API; its names load on use (torch only for the build itself)

        harvest = core.HarvestSettings(
            max_tokens=values["max_tokens"], max_len=values["max_len"], device=values["device"]
        )
        models = {
            s: core.ModelSpec.parse(values[f"model_{s}"].strip(), values[f"tokenizer_{s}"].strip() or None)
            for s in ("a", "b")
        }
        # the raw output text goes in, so an empty field is refused as empty (a Path("") would be the current folder)
        if crosscoder:
            from core.crosscoder.settings import CrosscoderSpec
            from core.pipeline.crosscoder import CrosscoderComparisonSpec, build_crosscoder_comparison

            cc_spec = CrosscoderComparisonSpec(
                crosscoder=CrosscoderSpec(values["crosscoder"].strip(), values["crosscoder_format"]),
                model_a=models["a"],
                model_b=models["b"],
                corpus=core.CorpusSpec.parse(values["corpus"].strip()),
                hook_a=values["hook_a"].strip() or None,
                hook_b=values["hook_b"].strip() or None,
                label_a=values["label_a"].strip(),
                label_b=values["label_b"].strip(),
                harvest=harvest,
            )
            # the same call as `python -m core compare --crosscoder`
            out = build_crosscoder_comparison(
                cc_spec,
                values["out"].strip(),
                overwrite=values["overwrite"],
                progress=progress,
                stages=tuple(values["stages"]),
            )
        else:
            # one config, validated once (for example: similarity needs the matching stage)
            config = core.ComparisonConfig(
                harvest=harvest,
                matching=core.MatchSettings.from_preset(values["preset"]),
                stages=tuple(values["stages"]),
            )
            # the same call as `python -m core compare`: harvest, then the chosen stages in order
            out = core.compare(
                core.SAESpec.parse(values["sae_a"].strip()),
                models["a"],
                core.SAESpec.parse(values["sae_b"].strip()),
                models["b"],
                core.CorpusSpec.parse(values["corpus"].strip()),
                out=values["out"].strip(),
                settings=config,
                hook_a=values["hook_a"].strip() or None,
                hook_b=values["hook_b"].strip() or None,
                label_a=values["label_a"].strip(),
                label_b=values["label_b"].strip(),
                overwrite=values["overwrite"],
                progress=progress,
            ).path
    except UserError as exc:
        st.error(str(exc))
    else:
        state.open(str(out))
        st.success(f"Built `{out}`.")
        if crosscoder:
            st.page_link("pages/model_diffing.py", label="Open its Model diffing page", icon=":material/difference:")
        else:
            st.page_link("pages/overview.py", label="Open its Overview", icon=":material/dashboard:")
