"""The architecture's rules that a test can hold (docs/architecture.md, "Layers and import rules").

- core/ is layered: a subpackage imports only from its own layer or the layers below it
  (no back-arrows), checked on every import statement, module-level or inside a function.
- core never loads streamlit or plotly; components/ never imports torch.
- The read path (bundle, search, dashboards reading, the app's data layer, every stage's
  settings) imports no torch, in a fresh interpreter.
"""

from __future__ import annotations

import ast
import pkgutil
import subprocess
import sys
from pathlib import Path

import core

ROOT = Path(__file__).resolve().parent.parent

# bottom to top; a name imports only names of its own or a lower layer
LAYERS: tuple[tuple[str, ...], ...] = (
    ("errors", "boundary", "progress", "paths", "sides", "device"),
    ("tokens",),
    ("bundle",),
    ("harvest",),
    ("matching",),
    ("spaces",),
    ("dashboards",),
    ("embedding",),
    ("explore",),
    ("crosscoder",),
    ("engine",),
    ("pipeline",),
    ("demo",),
    ("cli",),
    ("__init__", "__main__"),
)
LAYER_OF = {name: rank for rank, names in enumerate(LAYERS) for name in names}
READ_PATH = (
    "core.bundle",
    "core.bundle.reader",
    "core.bundle.writer",
    "core.bundle.codes",
    "core.bundle.lists",
    "core.bundle.provenance",
    "core.tokens",
    "core.explore.search",
    "core.dashboards.read",
    "core.matching.settings",
    "core.spaces.settings",
    "core.dashboards.settings",
    "core.embedding.settings",
    "core.harvest.specs",
    "core.pipeline.config",
    "core.engine.settings",
    "core.crosscoder.settings",
    "core.crosscoder.taxonomy",
    "components.data",
    "components.diffing_data",
)


def _all_core_modules() -> list[str]:
    return [m.name for m in pkgutil.walk_packages(core.__path__, "core.") if not m.name.endswith("__main__")]


def _unit(module: str) -> str:
    """The layer unit of a core module: its subpackage, or the top-level module name."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "__init__"


def _core_imports(path: Path) -> list[tuple[int, str]]:
    found = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            if node.module == "core":
                found += [(node.lineno, f"core.{a.name}") for a in node.names]
            elif node.module.startswith("core."):
                found.append((node.lineno, node.module))
        elif isinstance(node, ast.Import):
            found += [(node.lineno, a.name) for a in node.names if a.name.startswith("core.")]
    return found


def test_every_core_unit_has_a_layer() -> None:
    units = {_unit(m) for m in _all_core_modules()}
    assert units <= set(LAYER_OF), f"put {sorted(units - set(LAYER_OF))} into LAYERS and docs/architecture.md"


def test_core_imports_only_sideways_or_down() -> None:
    back_arrows = []
    for path in (ROOT / "core").rglob("*.py"):
        rel = path.relative_to(ROOT).with_suffix("")
        here = _unit(".".join(rel.parts).removesuffix(".__init__"))
        for line, target in _core_imports(path):
            there = _unit(target)
            if LAYER_OF[there] > LAYER_OF[here]:
                back_arrows.append(f"{rel}.py:{line} ({here}) imports {target} ({there})")
    assert not back_arrows, "\n".join(back_arrows)


def _fresh(code: str) -> str:
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    return out.stdout.strip()


def test_core_never_loads_streamlit_or_plotly() -> None:
    code = (
        "import sys\n"
        f"for name in {_all_core_modules()!r}:\n"
        "    __import__(name)\n"
        "bad = sorted(m for m in sys.modules if m.split('.')[0] in ('streamlit', 'plotly'))\n"
        "print(','.join(bad))\n"
    )
    assert _fresh(code) == "", "core imported UI packages"


def test_read_path_imports_no_torch() -> None:
    code = (
        "import sys\n"
        f"for name in {READ_PATH!r}:\n"
        "    __import__(name)\n"
        "import core\n"
        "print(','.join(sorted(m for m in sys.modules if m.split('.')[0] in ('torch', 'transformers', 'sae_lens'))))\n"
    )
    assert _fresh(code) == "", "the read path imported torch"


def test_components_never_import_torch() -> None:
    offenders = []
    for path in (ROOT / "components").rglob("*.py"):
        for line in path.read_text().splitlines():
            stripped = line.strip()
            if stripped.startswith(("import torch", "from torch")):
                offenders.append(f"{path.name}: {stripped}")
    assert not offenders, offenders


def test_every_page_is_listed_and_the_launcher_routes_every_session_through_app_py() -> None:
    # Streamlit treats a pages/ folder beside the main script as its old folder navigation for the
    # first session of every server (that session runs the page file by its name, without app.py);
    # components/launch.py fixes Streamlit's switch first, and `make app` and `featurebridge app` use it
    listed = (ROOT / "app.py").read_text()
    for page in sorted((ROOT / "pages").glob("*.py")):
        assert f'"pages/{page.name}"' in listed, f"{page.name} is not listed in app.py"
    launcher = (ROOT / "components" / "launch.py").read_text()
    assert "PagesManager.uses_pages_directory = False" in launcher
    assert "components/launch.py run app.py" in (ROOT / "Makefile").read_text()
    from core.cli.app import streamlit_command

    command = streamlit_command(ROOT / "app.py", "127.0.0.1", 8501)
    assert command[1] == str(ROOT / "components" / "launch.py") and command[2:4] == ["run", str(ROOT / "app.py")]
