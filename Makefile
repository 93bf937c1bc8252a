# The README's two commands: `make app` (demo in the app) and `make test` (the test suite).
.PHONY: setup app test test-fast demo lint

setup:
	bash scripts/setup.sh

demo: setup
	.venv/bin/python -m core demo

app: setup
	bundle="$$(.venv/bin/python -m core demo)" && FEATUREBRIDGE_BUNDLE="$$bundle" .venv/bin/python components/launch.py run app.py \
		--server.address 127.0.0.1 --server.headless true --browser.gatherUsageStats false

# the whole suite, after lint, format and types (CI runs exactly this)
test: lint
	.venv/bin/python -m pytest

# the fast lane: every module, no real-model end-to-end runs, no browser (under 2 minutes on 2 cores)
test-fast: setup
	.venv/bin/python -m pytest -q -m "not slow and not e2e"

lint: setup
	.venv/bin/ruff check .
	.venv/bin/ruff format --check .
	.venv/bin/mypy
