# labdeck's two entry points for a fresh machine: `make demo` and `make test`.
# Both create .venv on first use. CI runs `make test` through .ci/run.

PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
# The CPU build of torch keeps CI and laptops light; a GPU box sets TORCH to a CUDA build (see README).
TORCH ?= torch==2.13.0
# The tested versions of everything else (see constraints.txt); CONSTRAINTS= installs the newest allowed.
CONSTRAINTS ?= constraints.txt

.PHONY: demo test check lint types bench setup clean

$(VENV)/.installed: pyproject.toml $(CONSTRAINTS)
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q $(TORCH)
	$(PY) -m pip install -q $(if $(CONSTRAINTS),-c $(CONSTRAINTS)) -e '.[engine,dev]'
	touch $@

setup: $(VENV)/.installed

demo: $(VENV)/.installed
	$(VENV)/bin/labdeck demo

# .ci/deps installs tmux and git when missing (apt-get, quiet, a no-op when present): the tests
# drive them for real, and in CI (CI=true) a test that skips fails unless it is marked gpu.
test: $(VENV)/.installed
	./.ci/deps
	$(VENV)/bin/lint-imports
	$(VENV)/bin/ruff check db engine tui cli client tests bench
	$(PY) -m pytest -n auto --maxprocesses 4

check: test lint types

lint: $(VENV)/.installed
	$(VENV)/bin/ruff check db engine tui cli client tests bench

# mypy on the store, the worker side of the engine, the app and the CLI (config in pyproject.toml);
# the job processes (engine/jobs) are left to their tests.
types: $(VENV)/.installed
	$(VENV)/bin/mypy

bench: $(VENV)/.installed
	for b in bench/bench_*.py; do echo "== $$b"; $(PY) $$b || exit 1; done

clean:
	rm -rf $(VENV)
