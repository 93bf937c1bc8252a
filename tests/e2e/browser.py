"""A minimal Chrome DevTools Protocol driver for headless Debian Chromium (no browser download, no selenium).

Only what the end-to-end tests and benchmarks/app_pages.py need: open tabs (each a fresh Streamlit
session), navigate, evaluate JavaScript, move the mouse, click, type, take a screenshot. Talks to
each tab over its own websocket (``websockets`` is already installed).
"""

from __future__ import annotations

import base64
import itertools
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from websockets.sync.client import connect

CHROMIUM_FLAGS = (
    "--headless=new",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-dev-shm-usage",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--no-default-browser-check",
    "--window-size=1600,1200",
)


def free_port() -> int:
    """A TCP port nothing listens on right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def find_chromium() -> str | None:
    """The Chromium executable, if installed."""
    for name in ("chromium", "chromium-browser", "google-chrome"):
        path = shutil.which(name)
        if path:
            return path
    return None


def wait_for_http(url: str, timeout: float, expect: str | None = None) -> str:
    """GET ``url`` until it answers (and its body contains ``expect``); returns the body."""
    deadline = time.monotonic() + timeout
    last: Exception | None = None
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(url, timeout=5) as response:
                body = response.read().decode()
                if expect is None or expect in body:
                    return body
        except OSError as exc:
            last = exc
        time.sleep(0.3)
    raise TimeoutError(f"{url} did not answer within {timeout} s ({last})")


class Tab:
    """One page target (a browser tab) driven through CDP.

    Args:
        ws_url: the target's ``webSocketDebuggerUrl``.
        target_id: the target's id (to close it).
        port: the browser's debugging port.
    """

    def __init__(self, ws_url: str, target_id: str, port: int) -> None:
        self.target_id, self.port = target_id, port
        self.ws = connect(ws_url, max_size=64 * 1024 * 1024, open_timeout=30)
        self.ids = itertools.count(1)
        self.send("Page.enable")
        self.send("Runtime.enable")

    def send(self, method: str, **params: Any) -> dict[str, Any]:
        """Send one CDP command and return its result (events arriving meanwhile are skipped)."""
        msg_id = next(self.ids)
        self.ws.send(json.dumps({"id": msg_id, "method": method, "params": params}))
        while True:
            reply = json.loads(self.ws.recv(timeout=120))
            if reply.get("id") == msg_id:
                if "error" in reply:
                    raise RuntimeError(f"{method}: {reply['error']}")
                return reply.get("result", {})

    def evaluate(self, expression: str) -> Any:
        """Evaluate JavaScript in the page and return its (JSON-able) value."""
        result = self.send("Runtime.evaluate", expression=expression, returnByValue=True, awaitPromise=True)
        if "exceptionDetails" in result:
            raise RuntimeError(f"JS error: {result['exceptionDetails']}")
        return result.get("result", {}).get("value")

    def navigate(self, url: str) -> None:
        """Open ``url``."""
        self.send("Page.navigate", url=url)

    def wait_for(self, expression: str, timeout: float = 60.0, interval: float = 0.25) -> Any:
        """Poll a JavaScript expression until it is truthy; returns its value."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            value = self.evaluate(expression)
            if value:
                return value
            time.sleep(interval)
        raise TimeoutError(f"timed out waiting for: {expression}")

    def move(self, x: float, y: float) -> None:
        """Move the mouse to page coordinates (CSS pixels), as a user's pointer does."""
        self.send("Input.dispatchMouseEvent", type="mouseMoved", x=x, y=y)

    def click(self, x: float, y: float) -> None:
        """A real left click at page coordinates (CSS pixels)."""
        for kind in ("mouseMoved", "mousePressed", "mouseReleased"):
            self.send("Input.dispatchMouseEvent", type=kind, x=x, y=y, button="left", clickCount=1)
            time.sleep(0.05)

    def type_text(self, text: str) -> None:
        """Type ``text`` into the focused element, then press Enter."""
        self.send("Input.insertText", text=text)
        for kind in ("keyDown", "keyUp"):
            self.send("Input.dispatchKeyEvent", type=kind, key="Enter", code="Enter", windowsVirtualKeyCode=13)

    def screenshot(self, path: Path) -> Path:
        """Save a PNG of the viewport."""
        data = self.send("Page.captureScreenshot", format="png")["data"]
        path.write_bytes(base64.b64decode(data))
        return path

    def close(self) -> None:
        """Close this tab."""
        try:
            self.ws.close()
        finally:
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{self.port}/json/close/{self.target_id}", timeout=10).read()
            except OSError:
                pass


class Browser(Tab):
    """Headless Chromium; the object itself drives its first tab, :meth:`open_tab` opens more.

    Args:
        executable: the chromium binary.
    """

    def __init__(self, executable: str) -> None:
        port = free_port()
        self.profile = tempfile.mkdtemp(prefix="fb-chromium-")
        self.process = subprocess.Popen(
            [
                executable,
                *CHROMIUM_FLAGS,
                f"--remote-debugging-port={port}",
                f"--user-data-dir={self.profile}",
                "about:blank",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        targets = json.loads(wait_for_http(f"http://127.0.0.1:{port}/json/list", 60, '"type": "page"'))
        page = next(t for t in targets if t["type"] == "page")
        super().__init__(page["webSocketDebuggerUrl"], page["id"], port)

    def open_tab(self) -> Tab:
        """A new blank tab: navigating it to the app starts a fresh Streamlit session."""
        request = urllib.request.Request(f"http://127.0.0.1:{self.port}/json/new?about:blank", method="PUT")
        with urllib.request.urlopen(request, timeout=30) as response:
            target = json.loads(response.read().decode())
        return Tab(target["webSocketDebuggerUrl"], target["id"], self.port)

    def close(self) -> None:
        """Close the connection and end the browser this object started."""
        try:
            self.ws.close()
        finally:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
            shutil.rmtree(self.profile, ignore_errors=True)


@contextmanager
def serve_app(root: Path, log_path: Path) -> Iterator[str]:
    """A fresh app server on 127.0.0.1 (through components/launch.py, as ``make app`` serves it); yields its URL."""
    port = free_port()
    log = open(log_path, "w")  # noqa: SIM115  (closed below, after the server)
    process = subprocess.Popen(
        [
            sys.executable,
            "components/launch.py",  # every session, the first included, through app.py's router
            "run",
            "app.py",
            "--server.address",
            "127.0.0.1",
            "--server.port",
            str(port),
            "--server.headless",
            "true",
            "--server.fileWatcherType",
            "none",
            "--browser.gatherUsageStats",
            "false",
        ],
        cwd=root,
        stdout=log,
        stderr=subprocess.STDOUT,
        env={**os.environ, "HF_HUB_OFFLINE": "1", "WANDB_MODE": "disabled"},
    )
    try:
        wait_for_http(f"http://127.0.0.1:{port}/_stcore/health", 90, "ok")
        yield f"http://127.0.0.1:{port}"
    finally:
        process.terminate()
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()
        log.close()
