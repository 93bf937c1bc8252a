#!/usr/bin/env bash
# Rebuilds assets/plotly/plotly-app.min.js: plotly.js with only the trace types the app draws
# (components/plotly_assets.py APP_TRACES), from the npm release of the plotly.js version the installed
# plotly package carries. It starts in about a fifth of the full bundle's time (docs/app.md). Run it after
# a plotly upgrade: until then the app notices the version differs and serves the full plotly.js.
# Needs node and npm (the npm registry); the app itself does not.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-.venv/bin/python}
version=$("$PY" -c "import plotly.offline as o; print(o.get_plotlyjs_version())")
traces=$("$PY" -c "from components.plotly_assets import APP_TRACES; print(','.join(APP_TRACES))")
# a fixed folder: plotly's inline-CSS plugin names each style element by a hash of the file's absolute
# path, so the same folder gives the same bytes (the manifest's sha256 can be checked by a rebuild)
work=/tmp/featurebridge-plotly-build
rm -rf "$work"
mkdir -p "$work"
trap 'rm -rf "$work"' EXIT
cp scripts/plotly_bundle/build.cjs "$work/"
(
  cd "$work"
  npm init -y >/dev/null
  npm install --silent --no-audit --no-fund "plotly.js@$version" esbuild@0.28.2 esbuild-plugin-glsl@1.4.2 \
    esbuild-plugin-environment@0.5.0 esbuild-plugin-inline-css@0.0.1 stream-browserify@3.0.0 buffer@6.0.3
  node build.cjs "$work/plotly-app.min.js" "$traces"
)
mkdir -p assets/plotly
mv "$work/plotly-app.min.js" assets/plotly/plotly-app.min.js
"$PY" - "$version" "$traces" <<'PYEOF'
import hashlib, json, sys
from pathlib import Path
version, traces = sys.argv[1], sys.argv[2].split(",")
js = Path("assets/plotly/plotly-app.min.js").read_bytes()
manifest = {"plotly_js": version, "traces": traces, "sha256": hashlib.sha256(js).hexdigest()}
Path("assets/plotly/plotly-app.json").write_text(json.dumps(manifest, indent=2) + "\n")
print(f"assets/plotly/plotly-app.min.js: plotly.js {version}, {len(js):,} bytes, traces {','.join(traces)}")
PYEOF
