"""Where SVG scatter stops being faster than WebGL scattergl: two maps drawn in real Chromium.

Draws the Pair explorer's layout (two maps, each an orphans trace of n/4 points under a colour-scaled
trace of n points) with the app's own plotly.js build, as ``scatter`` (SVG) and as ``scattergl``
(WebGL), in a fresh tab each, alternating, and prints the median milliseconds from ``newPlot`` to
the second frame after it, and the ratio WebGL over SVG: above 1 SVG is faster at that size.
``components.figures.WEBGL_THRESHOLD`` is chosen from this.

    python benchmarks/webgl_threshold.py                   # 1K to 16K points per map
    python benchmarks/webgl_threshold.py --sizes 2048 --repeats 5

Headless Chromium runs WebGL in software (SwiftShader, ``--disable-gpu``), as the browser tests
and benchmarks/app_pages.py do; a browser with a GPU draws WebGL cheaper, so the crossover there
lies lower. Prints the load average beside the figures.
"""

from __future__ import annotations

import argparse
import functools
import http.server
import os
import shutil
import statistics
import sys
import tempfile
import threading
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.e2e.browser import Browser, find_chromium, free_port  # noqa: E402

PAGE = """<html><body>
<div id="a" style="width:700px;height:600px"></div><div id="b" style="width:700px;height:600px"></div>
<script src="plotly.js"></script>
<script>
window.draw = async (type, n) => {
  // a fixed pseudo-random layout, so both kinds draw the same points
  let s = 1;
  const rand = () => (s = (s * 16807) % 2147483647) / 2147483647;
  const t0 = performance.now();
  for (const id of ['a', 'b']) {
    const x = [], y = [], c = [];
    for (let i = 0; i < n; i++) { x.push(rand()); y.push(rand()); c.push(rand()); }
    await Plotly.newPlot(document.getElementById(id), [
      {type, mode: 'markers', x: x.slice(0, n / 4), y: y.slice(0, n / 4), marker: {color: '#bbb', size: 5}},
      {type, mode: 'markers', x, y, marker: {color: c, colorscale: 'Viridis', size: 6, showscale: true}},
    ], {dragmode: 'pan', hovermode: 'closest', showlegend: false});
  }
  await new Promise(r => requestAnimationFrame(() => requestAnimationFrame(r)));
  return performance.now() - t0;
};
</script></body></html>"""


def plotly_js() -> Path:
    """The app's plotly.js build when it is valid, else the installed full bundle (what the app serves)."""
    from components.plotly_assets import APP_BUNDLE_DIR, app_bundle_manifest

    if app_bundle_manifest() is not None:
        return APP_BUNDLE_DIR / "plotly-app.min.js"
    import plotly

    return Path(plotly.__file__).parent / "package_data" / "plotly.min.js"


def main() -> None:
    """Time both trace kinds at each size and print the table."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[1024, 2048, 4096, 8192, 16384])
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    chromium = find_chromium()
    assert chromium is not None, "Debian chromium is needed (apt-get install chromium)"
    with tempfile.TemporaryDirectory(prefix="fb-webgl-") as tmp:
        folder = Path(tmp)
        (folder / "index.html").write_text(PAGE)
        shutil.copyfile(plotly_js(), folder / "plotly.js")
        run(folder, chromium, args.sizes, args.repeats)


def run(folder: Path, chromium: str, sizes: list[int], repeats: int) -> None:
    """Serve ``folder`` and print the table."""

    class Quiet(http.server.SimpleHTTPRequestHandler):
        def log_message(self, *_: object) -> None:
            pass

    port = free_port()
    server = http.server.ThreadingHTTPServer(("127.0.0.1", port), functools.partial(Quiet, directory=str(folder)))
    threading.Thread(target=server.serve_forever, daemon=True).start()
    print(f"load average before: {os.getloadavg()}")
    browser = Browser(chromium)
    try:
        print(f"{'points/map':>10}  {'scatter ms':>10}  {'scattergl ms':>12}  {'gl / svg':>8}")
        for n in sizes:
            times: dict[str, list[float]] = {"scatter": [], "scattergl": []}
            for _ in range(repeats):
                for kind in times:
                    tab = browser.open_tab()
                    tab.navigate(f"http://127.0.0.1:{port}/index.html")
                    tab.wait_for("!!(window.Plotly && window.draw)", 30)
                    reply = tab.send("Runtime.evaluate", expression=f"draw('{kind}', {n})", awaitPromise=True)
                    times[kind].append(float(reply["result"]["value"]))
                    tab.close()
            svg, gl = statistics.median(times["scatter"]), statistics.median(times["scattergl"])
            print(f"{n:>10,}  {svg:>10.0f}  {gl:>12.0f}  {gl / svg:>7.2f}x")
    finally:
        browser.close()
        server.shutdown()
    print(f"load average after: {os.getloadavg()}")


if __name__ == "__main__":
    main()
