"""Page loads and interactions of the app in real Chromium, this checkout against a baseline checkout.

For each checkout (the baseline, ``git archive``d from ``--baseline`` into a temp folder, and this
working tree) the script starts ``streamlit run app.py`` on 127.0.0.1, visits every page once so
the server's caches are warm, then opens each page by deep link in a fresh browser tab (a fresh
Streamlit session) and measures:

* wall seconds from navigation until the page has settled (script finished, every chart drawn,
  nothing on the page changing for 0.5 s; the quiet half second is not counted);
* server CPU-seconds spent meanwhile (user + system time of the server process, from /proc).

On the Pair explorer it then times, in the same session: a click on a point of map A until its
partner is ringed in map B; a search (typed, Enter) until a hit is ringed in both maps; and, where
the maps are linked in the browser, hover feedback (mouse over a point of A until its partners are
ringed in B, measured inside the page from the pointer event to the drawn rings).

    python benchmarks/app_pages.py                       # the demo bundle
    python benchmarks/app_pages.py --synthetic 65536     # a synthetic 65K x 65K bundle too
    python benchmarks/app_pages.py BUNDLE --baseline e6336bc --repeats 3
    python benchmarks/app_pages.py --baseline HEAD --pages pairs correlation --repeats 5

Goals (issue 12): every page under 1.5 s and 0.5 server CPU-s on the demo, under 3 s on 65K; a
click selection and a search answered in under 1 s; hover feedback under 100 ms. Prints the load
average beside the figures: they depend on it.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tarfile
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import quote

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("WANDB_MODE", "disabled")

from tests.e2e.browser import Browser, Tab, find_chromium, free_port, wait_for_http  # noqa: E402
from tests.e2e.synthetic_bundle import build_synthetic  # noqa: E402

# main at the commit this work started from: the code the issue measured
BASELINE = "e6336bc"
# url path -> page name (Home is the default page at "/")
PAGES = {
    "": "home",
    "overview": "overview",
    "pairs": "pair explorer",
    "correlation": "correlation",
    "heatmaps": "heatmaps",
    "feature": "feature",
    "discover": "discover",
    "export": "export",
}
# a page's one-word name (for --pages) -> its url path
PAGE_NAMES = {("home" if path == "" else path): path for path in PAGES}
QUIET_S = 0.5
TICKS = os.sysconf("SC_CLK_TCK")
# what the page shows right now: settled once this stops changing while the script is idle
SIGNATURE = """(() => {
  const app = document.querySelector("[data-testid='stApp']");
  const idle = !!(app && app.getAttribute('data-test-script-state') === 'notRunning' && document.querySelector('h1'));
  const plots = Array.from(document.querySelectorAll('.js-plotly-plot'));
  const drawn = plots.filter(p => p._fullLayout).length;
  const stale = document.querySelectorAll("[data-stale='true']").length;
  const running = document.querySelectorAll("[data-testid='stStatusWidget']").length;
  const maps = document.querySelectorAll('[data-fb-maps-ready]').length;
  return JSON.stringify([idle, plots.length, drawn, maps, stale, running, document.body ? document.body.innerText.length : -1]);
})()"""


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of a process (all its threads) so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICKS


def drawn(signature: str) -> tuple[int, int]:
    """(plotly charts drawn, linked-map pairs drawn) out of a page signature."""
    import json

    values = json.loads(signature)
    return int(values[2]), int(values[3])


def settle(
    tab: Tab, t0: float, timeout: float = 180.0, expect: tuple[int, int] = (0, 0), quiet: float = QUIET_S
) -> float:
    """Wait until the page is idle, shows ``expect`` (charts, map pairs) drawn, and stays unchanged for ``quiet``.

    Returns:
        Seconds from ``t0`` to the page's last change.
    """
    last_sig, last_change = None, time.perf_counter()
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        sig = tab.evaluate(SIGNATURE)
        now = time.perf_counter()
        if sig != last_sig:
            last_sig, last_change = sig, now
        elif (
            "[true," in sig
            and now - last_change >= quiet
            and all(d >= e for d, e in zip(drawn(sig), expect, strict=True))
        ):
            if not tab.evaluate("document.querySelectorAll(\"[data-testid='stException']\").length"):
                return last_change - t0
            raise RuntimeError(f"the page shows an exception: {tab.evaluate('document.body.innerText')[:500]}")
        time.sleep(0.03)
    raise TimeoutError(f"the page did not settle within {timeout} s ({last_sig})")


@dataclass
class Server:
    """A running ``streamlit run app.py`` of one checkout."""

    checkout: Path
    env: dict[str, str]
    port: int = field(default_factory=free_port)
    process: subprocess.Popen | None = None
    log: Path | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> None:
        self.log = Path(tempfile.mkstemp(prefix="fb-bench-streamlit-", suffix=".log")[1])
        log = open(self.log, "w")  # noqa: SIM115  (lives as long as the server)
        self.process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "streamlit",
                "run",
                "app.py",
                "--server.address",
                "127.0.0.1",
                "--server.port",
                str(self.port),
                "--server.headless",
                "true",
                "--server.fileWatcherType",
                "none",
                "--browser.gatherUsageStats",
                "false",
            ],
            cwd=self.checkout,
            stdout=log,
            stderr=subprocess.STDOUT,
            env=self.env,
        )
        wait_for_http(f"{self.url}/_stcore/health", 120, "ok")

    def stop(self) -> None:
        if self.process is not None:
            self.process.terminate()
            try:
                self.process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.process.kill()
            self.process = None

    def cpu(self) -> float:
        assert self.process is not None
        return cpu_seconds(self.process.pid)


@contextmanager
def serving(checkout: Path) -> Iterator[Server]:
    """A server of ``checkout`` for the duration of the block."""
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "WANDB_MODE": "disabled"}
    # the app opens the bundle named in the link, not the demo of its own cache
    env.pop("FEATUREBRIDGE_BUNDLE", None)
    server = Server(checkout, env)
    server.start()
    try:
        yield server
    finally:
        server.stop()


def export_checkout(rev: str, into: Path) -> Path:
    """The tree of ``rev`` (this repository) written to ``into`` (no worktree, nothing in the repo changes)."""
    archive = into / "tree.tar"
    with open(archive, "wb") as out:
        subprocess.run(["git", "archive", rev], cwd=ROOT, stdout=out, check=True)
    tree = into / "tree"
    with tarfile.open(archive) as tar:
        tar.extractall(tree, filter="data")
    archive.unlink()
    return tree


def deep_link(server: Server, page: str, bundle: Path, pair: tuple[int, int]) -> str:
    fa, fb = pair
    return f"{server.url}/{page}?bundle={quote(str(bundle))}&side=a&feature={fa}&partner={fb}"


def open_settled(
    browser: Browser, url: str, server: Server, expect: tuple[int, int] = (0, 0), quiet: float = QUIET_S
) -> tuple[Tab, float, float]:
    """A fresh tab on ``url``; returns (tab, wall seconds, server CPU-seconds)."""
    tab = browser.open_tab()
    cpu0, t0 = server.cpu(), time.perf_counter()
    tab.navigate(url)
    wall = settle(tab, t0, expect=expect, quiet=quiet)
    return tab, wall, server.cpu() - cpu0


# ---------------------------------------------------------------- the maps, old (st.plotly_chart) and new (component)

# the centre of feature F of side S's map in page pixels, and the features ringed in each map;
# the linked-maps component exposes window.featureBridgeMaps, the old page two plotly charts
MAP_PROBE = """(() => {
  const api = window.featureBridgeMaps;
  if (api && api.ready()) return 'component';
  return document.querySelectorAll('.js-plotly-plot').length >= 2 ? 'plotly' : '';
})()"""
POINT_OLD = """((side, f) => {
  const gd = document.querySelectorAll('.js-plotly-plot')[side === 'a' ? 0 : 1];
  gd.scrollIntoView({block: 'center'});
  for (const name of ['matched', 'orphans']) {
    const t = gd._fullData.findIndex(tr => tr.name === name);
    if (t < 0) continue;
    const idx = Array.from(gd._fullData[t].customdata).findIndex(c => Number(c[0]) === f);
    if (idx < 0) continue;
    const tr = gd._fullData[t];
    const xa = gd._fullLayout.xaxis, ya = gd._fullLayout.yaxis, r = gd.getBoundingClientRect();
    return [r.left + xa._offset + xa.c2p(tr.x[idx]), r.top + ya._offset + ya.c2p(tr.y[idx])];
  }
  return null;
})"""
RINGED_OLD = """((side) => {
  const gd = document.querySelectorAll('.js-plotly-plot')[side === 'a' ? 0 : 1];
  if (!gd || !gd._fullData) return [];
  const tr = gd._fullData.find(t => t.name === 'highlight');
  return tr && tr.customdata ? Array.from(tr.customdata).map(c => Number(c[0])) : [];
})"""


def map_point(tab: Tab, kind: str, side: str, feature: int) -> list[float]:
    if kind == "component":
        return tab.evaluate(f"window.featureBridgeMaps.pointPosition('{side}', {feature}, true)")
    return tab.evaluate(f"{POINT_OLD}('{side}', {feature})")


def ringed(tab: Tab, kind: str, side: str, what: str = "selection") -> str:
    if kind == "component":
        return f"window.featureBridgeMaps.ringed('{side}', '{what}')"
    return f"{RINGED_OLD}('{side}')"


def time_click(tab: Tab, kind: str, pair: tuple[int, int]) -> float:
    """Seconds from a click on A's point to B's partner ringed (and the page idle again)."""
    fa, fb = pair
    tab.move(5, 5)
    time.sleep(0.3)
    x, y = map_point(tab, kind, "a", fa)
    tab.move(x, y)
    time.sleep(0.3)
    t0 = time.perf_counter()
    tab.click(x, y)
    tab.wait_for(f"{ringed(tab, kind, 'b')}.includes({fb})", 120, interval=0.02)
    return time.perf_counter() - t0


def time_search(tab: Tab, kind: str, query: str, hits: tuple[int, int]) -> float:
    """Seconds from Enter in the search box to a hit ringed in both maps."""
    tab.evaluate(
        "(() => { const el = Array.from(document.querySelectorAll('input')).find(i => "
        "(i.getAttribute('aria-label') || '').startsWith('Search')); el.focus(); el.select(); return true; })()"
    )
    t0 = time.perf_counter()
    tab.type_text(query)
    what = "search" if kind == "component" else "selection"
    ha, hb = hits
    tab.wait_for(
        f"{ringed(tab, kind, 'a', what)}.includes({ha}) && {ringed(tab, kind, 'b', what)}.includes({hb})",
        120,
        interval=0.02,
    )
    return time.perf_counter() - t0


def time_hover(tab: Tab, pair: tuple[int, int], n: int = 5) -> float:
    """Median milliseconds from a pointer event over A's point to B's partners drawn (measured in the page)."""
    fa, fb = pair
    samples = []
    for _ in range(n):
        tab.move(5, 5)
        tab.wait_for("window.featureBridgeMaps.ringed('b', 'hover').length === 0", 30, interval=0.02)
        x, y = map_point(tab, "component", "a", fa)
        tab.move(x, y)
        tab.wait_for(f"window.featureBridgeMaps.ringed('b', 'hover').includes({fb})", 30, interval=0.02)
        samples.append(float(tab.evaluate("window.featureBridgeMaps.lastHoverMs()")))
    return statistics.median(samples)


# ---------------------------------------------------------------- one checkout


def measure(
    checkout: Path,
    bundle: Path,
    pair: tuple[int, int],
    search: tuple[str, int, int],
    repeats: int,
    pages: tuple[str, ...] = tuple(PAGES),
) -> dict:
    """Page and interaction figures of one checkout on one bundle (``pages``: the url paths timed)."""
    chromium = find_chromium()
    assert chromium is not None, "Debian chromium is needed (apt-get install chromium)"
    results: dict = {"pages": {}}
    with serving(checkout) as server:
        browser = Browser(chromium)
        try:
            # Home first (a deep link in the server's very first session finds no page list yet), then
            # every page once to warm the server (imports, bundle reads, cached figures); what each page
            # draws once it is complete (charts, map pairs) is what later loads wait for
            open_settled(browser, f"{server.url}/", server)[0].close()
            expect = {}
            for page in PAGES:
                tab, _, _ = open_settled(browser, deep_link(server, page, bundle, pair), server, quiet=3.0)
                expect[page] = drawn(tab.evaluate(SIGNATURE))
                tab.close()
            for page in pages:
                walls, cpus = [], []
                for _ in range(repeats):
                    tab, wall, cpu = open_settled(browser, deep_link(server, page, bundle, pair), server, expect[page])
                    tab.close()
                    walls.append(wall)
                    cpus.append(cpu)
                results["pages"][page] = (statistics.median(walls), statistics.median(cpus))
                print(f"  {checkout.name}/{page or 'home'}: {walls} s, {cpus} cpu-s", file=sys.stderr)
            tab, _, _ = open_settled(
                browser, f"{server.url}/pairs?bundle={quote(str(bundle))}", server, expect["pairs"]
            )
            kind = tab.wait_for(MAP_PROBE, 60)
            results["kind"] = kind
            if kind == "component":
                results["hover_ms"] = time_hover(tab, pair)
            results["click_s"] = time_click(tab, kind, pair)
            settle(tab, time.perf_counter())
            query, ha, hb = search
            results["search_s"] = time_search(tab, kind, query, (ha, hb))
            tab.close()
        finally:
            browser.close()
    return results


# ---------------------------------------------------------------- bundles


def pick_pair(bundle: Path) -> tuple[tuple[int, int], tuple[str, int, int]]:
    """A kept pair whose A point stands apart (so a click hits it alone), and a feature-id search."""
    import numpy as np
    import polars as pl

    from core.bundle.reader import open_bundle

    opened = open_bundle(bundle)
    kept = opened.assignment().filter(pl.col("kept")).select("feature_a", "feature_b").collect()
    umap = opened.umap("a").sort("feature").collect()
    xy = np.stack([umap["x"].to_numpy(), umap["y"].to_numpy()], axis=1).astype(np.float64)
    if xy.shape[0] > 4096:  # nearest-neighbour gaps on a subsample of candidates keep this quick
        candidates = kept.head(2000)
    else:
        candidates = kept
    ids = candidates["feature_a"].to_numpy()
    gaps = np.array([np.partition(np.linalg.norm(xy - xy[f], axis=1), 1)[1] for f in ids])
    best = int(np.argmax(gaps))
    fa, fb = int(ids[best]), int(candidates["feature_b"][best])
    n_b = int(opened.side("b")["d_sae"])
    # "a<id>"/"b<id>" ring one side; a bare id rings that id on both sides
    probe = min(7, n_b - 1)
    return (fa, fb), (str(probe), probe, probe)


# ---------------------------------------------------------------- report


def report(name: str, base: dict, new: dict) -> None:
    print(f"\n{name}")
    print(f"{'page':<15}{'base s':>8}{'base cpu':>10}{'new s':>8}{'new cpu':>9}{'wall ratio':>12}{'cpu ratio':>11}")
    for page, label in PAGES.items():
        if page not in base["pages"] or page not in new["pages"]:
            continue
        bw, bc = base["pages"][page]
        nw, nc = new["pages"][page]
        print(
            f"{label:<15}{bw:>8.2f}{bc:>10.2f}{nw:>8.2f}{nc:>9.2f}{bw / max(nw, 1e-9):>11.1f}x{bc / max(nc, 1e-9):>10.1f}x"
        )
    for key, label, unit in (("click_s", "click -> partner ringed", "s"), ("search_s", "search -> hits ringed", "s")):
        if key in base and key in new:
            print(
                f"{label:<30}{base[key]:>8.2f} {unit} -> {new[key]:.2f} {unit}  ({base[key] / max(new[key], 1e-9):.1f}x)"
            )

    def hover(figures: dict) -> str:
        return f"{figures['hover_ms']:.0f} ms" if figures.get("hover_ms") else "n/a (no hover linking)"

    print(f"{'hover -> partners ringed':<30}{hover(base):>8} -> {hover(new)}")


def main() -> None:
    """Measure the baseline and this checkout on the demo (and optionally a synthetic bundle); print both."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("bundle", nargs="?", default=None, help="a bundle folder (default: the demo bundle)")
    parser.add_argument("--baseline", default=BASELINE, help="git revision of the baseline (default: %(default)s)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--synthetic", type=int, default=0, help="also measure a synthetic bundle this wide")
    parser.add_argument("--units", type=int, default=50_000, help="units of the synthetic bundle")
    parser.add_argument("--no-baseline", action="store_true", help="measure this checkout only")
    parser.add_argument("--pages", nargs="+", choices=list(PAGE_NAMES), help="time only these pages (all are warmed)")
    args = parser.parse_args()
    pages = tuple(PAGE_NAMES[label] for label in args.pages) if args.pages else tuple(PAGES)
    if args.bundle is None:
        from core.demo.spine import demo_bundle_path

        args.bundle = str(demo_bundle_path())
    bundles = [("demo" if args.bundle is None else Path(args.bundle).name, Path(args.bundle))]
    work = Path(tempfile.mkdtemp(prefix="fb-app-pages-"))
    try:
        if args.synthetic:
            t0 = time.perf_counter()
            out = work / f"synthetic-{args.synthetic}"
            bundles.append(
                (f"synthetic {args.synthetic} x {args.synthetic}", build_synthetic(out, args.synthetic, args.units))
            )
            print(f"synthetic bundle written in {time.perf_counter() - t0:.0f} s")
        baseline = None if args.no_baseline else export_checkout(args.baseline, work)
        print(f"load average before: {os.getloadavg()}")
        for name, bundle in bundles:
            pair, search = pick_pair(bundle)
            new = measure(ROOT, bundle, pair, search, args.repeats, pages)
            base = measure(baseline, bundle, pair, search, args.repeats, pages) if baseline else new
            report(f"{name}: {bundle} (pair A{pair[0]} <-> B{pair[1]}, search {search[0]!r})", base, new)
        print(f"load average after: {os.getloadavg()}")
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
