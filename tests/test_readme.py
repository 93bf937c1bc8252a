"""The README's Python example runs verbatim, on tiny real folders laid out as its text says."""

from __future__ import annotations

import contextlib
import io
import re
from pathlib import Path

import pytest

from tests.core.builders import build_bert_folder, build_topk_sae_folder

README = Path(__file__).resolve().parent.parent / "README.md"


def python_block(section: str) -> str:
    """The first ```python block of a README section (``## <section>``)."""
    text = README.read_text(encoding="utf-8")
    body = text.split(f"## {section}\n", 1)[1].split("\n## ", 1)[0]
    match = re.search(r"```python\n(.*?)```", body, re.S)
    assert match, f"README section {section!r} has no python block"
    return match.group(1)


def test_from_python_is_the_first_section_after_the_two_commands() -> None:
    text = README.read_text(encoding="utf-8")
    sections = re.findall(r"^## (.+)$", text, re.M)
    assert sections[0] == "From Python"
    assert text.index("make app") < text.index("make test") < text.index("## From Python")
    code = python_block("From Python")
    lines = [line for line in code.splitlines() if line.strip()]
    assert len(lines) <= 5, "the notebook session is five lines"


def test_the_readme_example_runs_verbatim(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # the folders the text names: two sae-lens SAE folders on one transformers model folder
    build_bert_folder(tmp_path / "model")
    build_topk_sae_folder(tmp_path / "sae_a", hook_name="blocks.1.hook_resid_post", seed=1)
    build_topk_sae_folder(tmp_path / "sae_b", hook_name="blocks.2.hook_resid_post", seed=3)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("FEATUREBRIDGE_CACHE", str(tmp_path / "cache"))
    namespace: dict[str, object] = {"__name__": "__main__"}
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        exec(compile(python_block("From Python"), str(README), "exec"), namespace)  # noqa: S102
    out = printed.getvalue()
    assert "feature_a" in out and "corr" in out
    assert re.search(r"MetricSummary\(metric='svcca', value=0\.\d+, .*p_value=0\.\d+", out), out
    bundle = namespace["bundle"]
    assert bundle.path.parent == tmp_path / "cache" / "bundles"  # type: ignore[attr-defined]
    summary = bundle.similarity().metric("svcca")  # type: ignore[attr-defined]
    assert summary.n_null == 1000 and 0 < summary.p_value <= 1  # the shipped default null
