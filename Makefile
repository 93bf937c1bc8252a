# The README's two commands: `make app` (demo in the app) and `make test` (the test suite).
.PHONY: setup app test demo lint

setup:
	bash scripts/setup.sh

demo: setup
	.venv/bin/python -m core demo

app: setup
	bundle="$$(.venv/bin/python -m core demo)" && FEATUREBRIDGE_BUNDLE="$$bundle" .venv/bin/streamlit run app.py \
		--server.address 127.0.0.1 --server.headless true --browser.gatherUsageStats false

test: setup
	.venv/bin/python -m pytest

lint: setup
	.venv/bin/ruff check .
