# make demo  - create .venv, install, run the demo (save, crash, restore, continue)
# make test  - create .venv, install, run ruff, mypy, the import-linter contract and pytest
# make bench - run the benchmarks; results go to benchmarks/results/
# make lab   - start JupyterLab with the extension and examples/

PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip
STAMP := $(VENV)/.installed

.PHONY: demo test lint typecheck contracts pytest bench lab clean

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

pytest: $(STAMP)
	$(PY) -m pytest -q

test: lint typecheck contracts pytest

bench: $(STAMP)
	$(PY) -m benchmarks

lab: $(STAMP)
	$(VENV)/bin/jupyter lab --ip 127.0.0.1 --notebook-dir examples

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache
