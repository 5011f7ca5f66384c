# make demo  - create .venv, install, run the demo (save, crash, restore, continue)
# make test  - create .venv, install, run ruff, mypy, the import-linter contract and pytest
# make bench - run the benchmarks; results go to benchmarks/results/
# make lab   - start JupyterLab with the extension and examples/
# make screenshots - retake docs/screenshots/ from the browser tests

PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip
STAMP := $(VENV)/.installed

.PHONY: demo test lint typecheck contracts pytest bench lab clean browser screenshots

$(STAMP): pyproject.toml constraints.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP) install --quiet --upgrade pip
	$(PIP) install --quiet -c constraints.txt -e ".[dev]"
	touch $(STAMP)

demo: $(STAMP)
	$(PY) examples/demo.py

lint: $(STAMP)
	$(VENV)/bin/ruff check ckpt_notebook tests benchmarks examples

typecheck: $(STAMP)
	$(VENV)/bin/mypy

contracts: $(STAMP)
	$(VENV)/bin/lint-imports

# The browser tests drive Debian's chromium with Playwright (Playwright's own downloads are
# not used); install it when it is missing (needs root, as in CI).
browser:
	@command -v chromium >/dev/null 2>&1 || { \
		echo "installing Debian's chromium for the browser tests"; \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium \
		|| { echo "could not install chromium: run as root, or apt-get install chromium"; exit 1; }; }

pytest: $(STAMP) browser
	$(PY) -m pytest -q

test: lint typecheck contracts pytest

screenshots: $(STAMP) browser
	CKPT_NOTEBOOK_SCREENSHOTS=1 $(PY) -m pytest -q tests/test_dashboard_browser.py -k screenshot

bench: $(STAMP)
	$(PY) -m benchmarks

lab: $(STAMP)
	$(VENV)/bin/jupyter lab --ip 127.0.0.1 --notebook-dir examples

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache
