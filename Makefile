# make demo  - create .venv, install, run the demo (save, crash, restore, continue)
# make test  - create .venv, install (builds the JupyterLab extension), run ruff, mypy, the
#              import-linter contract, tsc and eslint on extension/, and pytest
# make bench - run the benchmarks; results go to benchmarks/results/
# make lab   - start JupyterLab with the extension and examples/
# make labextension - rebuild the JupyterLab extension (extension/) after editing it
# make screenshots - retake docs/screenshots/ from the quickstart notebook in a real JupyterLab

PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip
STAMP := $(VENV)/.installed
# The JupyterLab extension: pip install builds extension/ into ckpt_notebook/labextension/
# (hatch-jupyter-builder runs npm install + npm run build:prod; node >= 20 and npm needed).
LABEXT := ckpt_notebook/labextension/package.json
LABEXT_SOURCES := $(wildcard extension/src/*.ts extension/style/*) extension/package.json \
	extension/tsconfig.json package-lock.json
# Azurite (Azure Blob on 127.0.0.1 for tests/test_cloud.py) comes from npm, into .azurite/.
AZURITE_VERSION := 3.37.0
NPM_RUN := PATH="$(CURDIR)/$(VENV)/bin:$$PATH" npm run --silent

.PHONY: demo test lint typecheck contracts pytest bench lab clean browser screenshots \
	labextension tslint tscheck

# The editable install copies the built extension into the venv; `jupyter-builder develop`
# replaces the copy with a link to ckpt_notebook/labextension, so a rebuild shows at once.
$(STAMP): pyproject.toml constraints.txt package-lock.json
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP) install --quiet --upgrade pip
	$(PIP) install --quiet -c constraints.txt -e ".[dev]"
	$(VENV)/bin/jupyter-builder develop --overwrite --log-level=WARN .
	test -x .azurite/node_modules/.bin/azurite-blob || npm install --no-audit --no-fund \
		--no-save --prefix .azurite azurite@$(AZURITE_VERSION)
	touch $(STAMP)

$(LABEXT): $(LABEXT_SOURCES) | $(STAMP)
	test -d node_modules || npm install --no-audit --no-fund
	$(NPM_RUN) build:prod
	touch $(LABEXT)

labextension: $(LABEXT)

demo: $(STAMP)
	$(PY) examples/demo.py

lint: $(STAMP)
	$(VENV)/bin/ruff check ckpt_notebook tests benchmarks examples

typecheck: $(STAMP)
	$(VENV)/bin/mypy

contracts: $(STAMP)
	$(VENV)/bin/lint-imports

# The extension's TypeScript: type-checked (tsc --noEmit, strict) and linted (eslint).
tscheck: $(STAMP)
	$(NPM_RUN) typecheck

tslint: $(STAMP)
	$(NPM_RUN) lint

# The browser tests drive Debian's chromium with Playwright (Playwright's own downloads are
# not used); install it when it is missing (needs root, as in CI).
browser:
	@command -v chromium >/dev/null 2>&1 || { \
		echo "installing Debian's chromium for the browser tests"; \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium \
		|| { echo "could not install chromium: run as root, or apt-get install chromium"; exit 1; }; }

# Tests write only under temporary or ignored folders: the work tree (tracked files and
# untracked ones git does not ignore) must be the same after pytest as before it.
WORKTREE = { git status --porcelain=v1 --untracked-files=all; \
	git ls-files -m -o --exclude-standard -z | xargs -0 -r sha1sum; } 2>/dev/null

pytest: $(STAMP) $(LABEXT) browser
	@$(WORKTREE) > $(VENV)/worktree.before || true
	$(PY) -m pytest -q --durations=15
	@$(WORKTREE) > $(VENV)/worktree.after || true
	@cmp -s $(VENV)/worktree.before $(VENV)/worktree.after || { \
		echo "make test: the tests changed the work tree (they must write only under temporary or ignored folders):"; \
		diff $(VENV)/worktree.before $(VENV)/worktree.after; exit 1; }

test: lint typecheck contracts tscheck tslint pytest

# The README's pictures, from examples/quickstart.ipynb run in a real JupyterLab.
screenshots: $(STAMP) $(LABEXT) browser
	$(PY) tests/screenshots.py

bench: $(STAMP)
	$(PY) -m benchmarks

# --allow-root only where make runs as root (containers, CI).
lab: $(STAMP) $(LABEXT)
	$(VENV)/bin/jupyter lab --ip 127.0.0.1 --notebook-dir examples $(if $(filter 0,$(shell id -u)),--allow-root)

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache node_modules extension/lib \
		ckpt_notebook/labextension
