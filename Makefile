# Quick start: `make run` (main job on the offline default) and `make test`.
# Both create .venv with the pinned requirements on first use.
PYTHON ?= python3
VENV := .venv
WORKDIR ?= runs/default
CONFIG ?= configs/default.py
PYTEST_ARGS ?=

$(VENV)/.installed: requirements.txt
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install --quiet --upgrade pip
	$(VENV)/bin/pip install --quiet -r requirements.txt
	touch $@

.PHONY: run test test-all bench
run: $(VENV)/.installed
	$(VENV)/bin/python -m experiments.main --config=$(CONFIG) --workdir=$(WORKDIR)

test: $(VENV)/.installed
	$(VENV)/bin/python -m pytest -q -m "not slow" $(PYTEST_ARGS) tests

test-all: $(VENV)/.installed
	$(VENV)/bin/python -m pytest -q $(PYTEST_ARGS) tests

bench: $(VENV)/.installed
	$(VENV)/bin/python -m benchmarks.supernet
