"""The app listens on 127.0.0.1 however it is started: the checked-in .streamlit/config.toml beside app.py pins it.

Streamlit reads the config file beside the script it runs (as well as the working folder's and
the home's), so `streamlit run /path/to/app.py` from any folder, with no flags, serves on this
machine only. Only an explicit choice (a flag, STREAMLIT_SERVER_ADDRESS, `featurebridge app
--address`) binds elsewhere. The same file switches off Streamlit's full garbage collection after every
script run (see the test below).
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
CONFIG = ROOT / ".streamlit" / "config.toml"

# what `streamlit run SCRIPT [--server.address X]` does before it serves (streamlit.web.cli._main_run)
_RESOLVE = """
import sys
import streamlit.config as config
from streamlit.web import bootstrap
config._main_script_path = sys.argv[1]
bootstrap.load_config_options({"server_address": sys.argv[3] if len(sys.argv) > 3 else None})
print(config.get_option(sys.argv[2]), config.get_where_defined(sys.argv[2]))
"""


def _resolved(tmp_path: Path, *flag: str, option: str = "server.address") -> list[str]:
    home = tmp_path / "home"
    home.mkdir(exist_ok=True)
    clean = {k: v for k, v in os.environ.items() if not k.startswith("STREAMLIT_")}
    done = subprocess.run(
        [sys.executable, "-c", _RESOLVE, str(ROOT / "app.py"), option, *flag],
        cwd=tmp_path,  # a folder with no .streamlit of its own
        env={**clean, "HOME": str(home)},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    return done.stdout.strip().split(maxsplit=1)


def test_streamlit_resolves_the_address_from_the_file_beside_app_py(tmp_path: Path) -> None:
    address, where = _resolved(tmp_path)
    assert address == "127.0.0.1" and Path(where) == CONFIG


def test_binding_elsewhere_takes_an_explicit_flag(tmp_path: Path) -> None:
    address, where = _resolved(tmp_path, "0.0.0.0")
    assert address == "0.0.0.0" and where != str(CONFIG), (address, where)


def test_no_full_garbage_collection_after_every_script_run(tmp_path: Path) -> None:
    # the app's process holds about 400K objects (torch, transformers, plotly): Streamlit's default full
    # collection after each run cost 0.22 s with the GIL held, on every page load and click
    collect, where = _resolved(tmp_path, option="runner.postScriptGC")
    assert collect == "False" and Path(where) == CONFIG


def _listening(port: int) -> set[str]:
    """Local addresses with a socket listening on ``port`` (IPv4 and IPv6), from /proc/net."""
    found = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            rows = Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        for row in rows:
            local, state = row.split()[1], row.split()[3]
            host, hexport = local.split(":")
            if state == "0A" and int(hexport, 16) == port:  # 0A: LISTEN
                found.add(host)
    return found


@pytest.mark.slow
@pytest.mark.skipif(not Path("/proc/net/tcp").exists(), reason="reads the listening sockets from /proc/net")
def test_streamlit_run_by_hand_from_another_folder_listens_on_loopback_only(tmp_path: Path) -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    home = tmp_path / "home"
    home.mkdir()
    clean = {k: v for k, v in os.environ.items() if not k.startswith("STREAMLIT_")}
    server = subprocess.Popen(
        [sys.executable, "-m", "streamlit", "run", str(ROOT / "app.py"), "--server.port", str(port)],
        cwd=tmp_path,
        env={**clean, "HOME": str(home), "STREAMLIT_SERVER_HEADLESS": "true"},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 120
        while not _listening(port) and time.monotonic() < deadline and server.poll() is None:
            time.sleep(0.5)
        hosts = _listening(port)
    finally:
        server.terminate()
        server.wait(timeout=30)
    assert hosts, "the server did not start"
    # 0100007F is 127.0.0.1 in /proc's byte order; an any-address socket would show 00000000 or ::
    assert hosts == {"0100007F"}, hosts
