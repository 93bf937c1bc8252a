"""``featurebridge app``: serve the Streamlit app on this machine (127.0.0.1 unless told otherwise).

The app is not imported here (core never loads streamlit): it runs as ``streamlit run`` through
the app's launcher (``components/launch.py``, which routes every session through the app's
``st.navigation``) on the app script of this install: ``core/app/app.py`` in a wheel, ``app.py``
in a checkout.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
from pathlib import Path

from core.errors import SpecError


def app_script() -> Path:
    """The app's entry script of this install.

    Returns:
        ``core/app/app.py`` when the app travels inside the package (a wheel), else the
        checkout's top-level ``app.py``.

    Raises:
        SpecError: when neither exists (a broken install).
    """
    core_dir = Path(__file__).resolve().parent.parent
    for candidate in (core_dir / "app" / "app.py", core_dir.parent / "app.py"):
        if candidate.is_file():
            return candidate
    raise SpecError(f"No app script next to {core_dir}; reinstall featurebridge (pip install featurebridge).")


def streamlit_command(script: Path, address: str, port: int) -> list[str]:
    """The command line that serves ``script``.

    Args:
        script: the app's entry script.
        address: the interface to bind (127.0.0.1 keeps the app on this machine).
        port: the TCP port.

    Returns:
        The argument list for ``subprocess``.
    """
    return [
        sys.executable,
        str(script.parent / "components" / "launch.py"),
        "run",
        str(script),
        "--server.address",
        address,
        "--server.port",
        str(port),
        "--server.headless",
        "true",
        "--browser.gatherUsageStats",
        "false",
    ]


def cmd_app(args: argparse.Namespace) -> int:
    """Serve the app until interrupted; returns Streamlit's exit status."""
    if args.port < 1 or args.port > 65535:
        raise SpecError(f"--port {args.port} is not a TCP port; give a number from 1 to 65535.")
    env = dict(os.environ)
    if args.bundle:
        bundle = Path(args.bundle).expanduser()
        if not bundle.is_dir():
            raise SpecError(f"Bundle folder {bundle} does not exist; give a bundle folder or leave --bundle out.")
        env["FEATUREBRIDGE_BUNDLE"] = str(bundle.resolve())
    print(f"Feature Bridge on http://{args.address}:{args.port}", file=sys.stderr)
    return subprocess.call(streamlit_command(app_script(), args.address, args.port), env=env)


def add_app_command(sub: argparse._SubParsersAction) -> None:
    """Register ``app`` on the CLI's sub-command parser.

    Args:
        sub: the parser's ``add_subparsers()`` result.
    """
    app = sub.add_parser("app", help="serve the app on http://127.0.0.1:8501 (Ctrl-C stops it)")
    app.add_argument("--bundle", default=None, help="open this bundle first")
    app.add_argument("--port", type=int, default=8501)
    app.add_argument(
        "--address",
        default="127.0.0.1",
        help="interface to bind; anything but 127.0.0.1 exposes the app (and your bundles) to the network",
    )
    app.set_defaults(func=cmd_app)
