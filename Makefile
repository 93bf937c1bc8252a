# The README's two commands: `make app` (demo in the app) and `make test` (the test suite).
.PHONY: setup app test test-fast demo lint

setup:
	bash scripts/setup.sh

demo: setup
	.venv/bin/python -m core demo

# the app answers at once: the demo, when not built yet, builds in the background (its own process,
# started here), and the app opens on it (Home shows the stages; each page lights up as its part lands)
app: setup
	.venv/bin/python -m components.builds demo
	FEATUREBRIDGE_BUNDLE=demo .venv/bin/python components/launch.py run app.py \
		--server.address 127.0.0.1 --server.headless true --browser.gatherUsageStats false

# the whole suite, after lint, format and types (CI runs exactly this)
test: lint
	.venv/bin/python -m pytest

# the fast lane: every module, no real-model end-to-end runs, no browser (about 3 minutes on 2 cores)
test-fast: setup
	.venv/bin/python -m pytest -q -m "not slow and not e2e"

lint: setup
	.venv/bin/ruff check .
	.venv/bin/ruff format --check .
	.venv/bin/mypy
