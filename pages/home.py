"""Home: open the demo, a bundle folder or a recent bundle, or build a new comparison."""

from __future__ import annotations

from pathlib import Path

import streamlit as st

from components.cache import cached_bundle
from components.state import get_state
from components.widgets import make_progress, render_build_form
from core.errors import UserError

state = get_state()
st.title("Feature Bridge")
st.write("Match and compare the features of two sparse autoencoders: across models, layers or sizes.")
if state.bundle_path:
    st.success(f"Open bundle: `{state.bundle_path}`")
    st.page_link("pages/overview.py", label="Go to its Overview", icon=":material/dashboard:")

left, right = st.columns(2)
with left:
    st.header("Embedded demo")
    st.caption("all-MiniLM-L6-v2 vs paraphrase-MiniLM-L3-v2 on the fortunes text, with TopK SAEs trained here.")
    try:
        from core.demo.spine import build_demo, demo_bundle_path  # imports torch: after the header renders
    except ImportError as exc:  # a half-installed checkout should still open bundles
        st.warning(f"The demo builder cannot be imported in this install ({exc}); open a bundle folder instead.")
    else:
        demo_path = demo_bundle_path()
        if (demo_path / "manifest.json").is_file():
            if st.button("Open the demo bundle", type="primary", key="open-demo"):
                state.open(str(demo_path))
                st.switch_page("pages/overview.py")
        else:
            st.info("The demo bundle is not built yet (about 5-10 minutes on 2 CPU cores, once).")
            if st.button("Build the demo bundle", type="primary", key="build-demo"):
                bar = st.progress(0.0, text="starting")

                def progress(stage: str, done: int, total: int) -> None:
                    bar.progress(min(done / total, 1.0) if total else 0.0, text=stage)

                try:
                    state.open(str(build_demo(progress=progress)))
                except UserError as exc:
                    st.error(str(exc))
                else:
                    st.switch_page("pages/overview.py")

    st.subheader("Cross-family demo")
    st.caption(
        "all-MiniLM-L6-v2 (WordPiece) vs SmolLM2-135M (byte-level BPE): different tokenizers, aligned on "
        "common character cuts."
    )
    from core.demo.family import build_cross_demo, cross_demo_bundle_path

    cross_path = cross_demo_bundle_path()
    if (cross_path / "manifest.json").is_file():
        if st.button("Open the cross-family demo", key="open-cross"):
            state.open(str(cross_path))
            st.switch_page("pages/overview.py")
    else:
        st.info("Not built yet (about 10 minutes on 2 CPU cores, once; or `python -m core demo --pair family`).")
        if st.button("Build the cross-family demo", key="build-cross"):
            progress = make_progress()
            try:
                state.open(str(build_cross_demo(progress=progress)))
            except UserError as exc:
                st.error(str(exc))
            else:
                st.switch_page("pages/overview.py")

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
    try:
        from core.harvest.specs import CorpusSpec, HarvestSettings, ModelSpec, SAESpec, SideSpec
        from core.pipeline.compare import ComparisonSpec, build_comparison

        sides = {
            s: SideSpec(
                ModelSpec.parse(values[f"model_{s}"].strip(), values[f"tokenizer_{s}"].strip() or None),
                SAESpec.parse(values[f"sae_{s}"].strip()),
                values[f"hook_{s}"].strip() or None,
                values[f"label_{s}"].strip(),
            )
            for s in ("a", "b")
        }
        spec = ComparisonSpec(
            a=sides["a"],
            b=sides["b"],
            corpus=CorpusSpec.parse(values["corpus"].strip()),
            harvest=HarvestSettings(
                max_tokens=values["max_tokens"], max_len=values["max_len"], device=values["device"]
            ),
        )
        # the same call as `python -m core compare`: harvest, then the chosen stages in order; the raw text
        # goes in, so an empty field is refused as empty (a Path("") would be the current folder)
        out = build_comparison(
            spec,
            values["out"].strip(),
            overwrite=values["overwrite"],
            progress=progress,
            stages=tuple(values["stages"]),
        )
    except UserError as exc:
        st.error(str(exc))
    else:
        state.open(str(out))
        st.success(f"Built `{out}`.")
        st.page_link("pages/overview.py", label="Open its Overview", icon=":material/dashboard:")
