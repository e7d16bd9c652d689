# Two commands do all setup: `make train` and `make test` each create .venv on first use.
# torch is pinned and installed first (constraints.txt), so nothing can pull a multi-GB CUDA build.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
# Real data: ../shared/data when it exists (this project's shared folder), unless already set.
PBEXP_DATA_MIRROR ?= $(shell [ -d ../shared/data ] && cd ../shared/data && pwd)
export PBEXP_DATA_MIRROR
ARGS ?=

.PHONY: train test test-all install clean

$(BIN)/pbexp-train: pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -c constraints.txt torch==2.13.0
	$(BIN)/pip install --quiet -c constraints.txt -e ".[dev]"
	touch $@

install: $(BIN)/pbexp-train

train: install  ## the default run: a 2-layer LSTM language model on Penn Treebank
	$(BIN)/pbexp-train $(ARGS)

test: install  ## the fast test suite (a few minutes on 2 cores)
	$(BIN)/python -m pytest $(ARGS)

test-all: install  ## everything, slow tests on real data included
	$(BIN)/python -m pytest -m "" $(ARGS)

clean:
	rm -rf $(VENV) outputs
