# Two commands do all setup: `make train` and `make test` each create .venv on first use.
# torch is pinned (constraints.txt) and installed first, from TORCH_INDEX when given:
#   (empty)                                   pip's own index: PyPI's torch is the CUDA build on Linux x86_64
#                                             (on this project's machines pip finds a local CPU build)
#   https://download.pytorch.org/whl/cpu      the CPU-only build (~200 MB instead of several GB)
#   https://download.pytorch.org/whl/cu126    a CUDA 12.6 build
PYTHON ?= python3
TORCH_INDEX ?=
VENV := .venv
BIN := $(VENV)/bin
# Real data: ../shared/data when it exists (this project's shared folder), unless already set.
PBEXP_DATA_MIRROR ?= $(shell [ -d ../shared/data ] && cd ../shared/data && pwd)
export PBEXP_DATA_MIRROR
ARGS ?=

.PHONY: train test test-all lint install clean

$(BIN)/pbexp-train: pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -c constraints.txt torch==2.13.0 $(if $(TORCH_INDEX),--index-url $(TORCH_INDEX))
	$(BIN)/pip install --quiet -c constraints.txt -e ".[dev]"
	touch $@

install: $(BIN)/pbexp-train

train: install  ## the default run: a 2-layer LSTM language model on Penn Treebank
	$(BIN)/pbexp-train $(ARGS)

test: install  ## the fast test suite, one worker per core (about 6 minutes on 2 cores)
	$(BIN)/python -m pytest -n auto $(ARGS)

test-all: install  ## everything, slow tests on real data included
	$(BIN)/python -m pytest -n auto -m "" $(ARGS)

lint: install  ## ruff: lint and format check (pyproject.toml [tool.ruff]); `ruff format . && ruff check --fix .` mends
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

clean:
	rm -rf $(VENV) outputs build
