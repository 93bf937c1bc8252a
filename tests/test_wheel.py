"""The wheel is one working product: built from the checkout, installed into a fresh venv outside it.

The venv gets the wheel alone (``--no-deps``); its dependencies come from the development venv
through a path file, so the test runs offline and in seconds, while every line of Feature Bridge
it runs is the installed wheel's (the test checks ``core.__file__``).
"""

from __future__ import annotations

import os
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

import pytest

from tests.pages.app_bundle import build_app_bundle

ROOT = Path(__file__).resolve().parent.parent
pytestmark = pytest.mark.slow


def _run(cmd: list[str], cwd: Path, timeout: int = 600) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    out = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    assert out.returncode == 0, f"{cmd} failed:\n{out.stdout}\n{out.stderr}"
    return out


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("wheel")
    _run(
        [sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation", "-w", str(out), str(ROOT)],
        out,
    )
    (path,) = out.glob("featurebridge-*.whl")
    return path


@pytest.fixture(scope="module")
def venv(wheel: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("venv") / "venv"
    _run([sys.executable, "-m", "venv", "--without-pip", str(root)], root.parent)
    python = root / "bin" / "python"
    _run([sys.executable, "-m", "pip", "--python", str(python), "install", "-q", "--no-deps", str(wheel)], root.parent)
    site = Path(
        _run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"], root).stdout.strip()
    )
    # dependencies only: a path line adds the dev venv's packages after the wheel's (no .pth runs from there)
    (site / "zz_dev_dependencies.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    return root


def test_the_wheel_holds_one_package_with_its_assets_and_app(wheel: Path) -> None:
    names = zipfile.ZipFile(wheel).namelist()
    top = {n.split("/")[0] for n in names}
    assert top == {"core", wheel.name.split("-")[0] + "-" + wheel.name.split("-")[1] + ".dist-info"}
    for part in ("core/assets/nonconcept_tokens.txt", "core/assets/concepts.json", "core/app/app.py"):
        assert part in names
    for page in (ROOT / "pages").glob("*.py"):
        assert f"core/app/pages/{page.name}" in names
    for module in (ROOT / "components").rglob("*.py"):
        assert f"core/app/components/{module.relative_to(ROOT / 'components')}" in names
    packages = {str(p.parent.relative_to(ROOT)) for p in (ROOT / "core").rglob("__init__.py")}
    missing = [p for p in packages if f"{p}/__init__.py" not in names]
    assert not missing, f"add {missing} to [tool.setuptools] packages in pyproject.toml"


def test_featurebridge_runs_from_the_installed_wheel(venv: Path, tmp_path: Path) -> None:
    bundle = build_app_bundle(tmp_path / "bundles")
    info = _run([str(venv / "bin" / "featurebridge"), "info", str(bundle)], tmp_path)
    assert f"bundle   {bundle}" in info.stdout and "parts" in info.stdout
    probe = (
        "import core, core.tokens\n"
        "from core.cli.app import app_script\n"
        "from core.matching.filters import apply_filters\n"
        "print(core.__file__)\n"
        "print(app_script())\n"
        "print(sorted(core.tokens.load_nonconcept_tokens()))\n"
    )
    lines = _run([str(venv / "bin" / "python"), "-c", probe], tmp_path).stdout.splitlines()
    assert lines[0].startswith(str(venv)), f"core came from {lines[0]}, not the wheel"
    assert lines[1].startswith(str(venv)) and lines[1].endswith("core/app/app.py")
    assert "<bos>" in lines[2] and "<|endoftext|>" in lines[2]


def test_the_installed_app_renders_its_home_page(venv: Path, tmp_path: Path) -> None:
    probe = (
        "from streamlit.testing.v1 import AppTest\n"
        "from core.cli.app import app_script\n"
        "at = AppTest.from_file(str(app_script()), default_timeout=120).run()\n"
        "assert not at.exception, [e.value for e in at.exception]\n"
        "print(at.title[0].value if at.title else '')\n"
    )
    out = _run([str(venv / "bin" / "python"), "-c", probe], tmp_path)
    assert "Feature Bridge" in out.stdout
