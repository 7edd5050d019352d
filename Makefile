# crossbook developer commands. `make test` and `make serve` each do all set-up
# on a fresh machine: they create .venv and install the project into it
# (editable, with the dev extra), re-installing only when pyproject.toml changes.

PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.install.stamp

# CI=true selects the thorough hypothesis profile; an explicit HYPOTHESIS_PROFILE wins.
ifeq ($(CI),true)
HYPOTHESIS_PROFILE ?= ci
else
HYPOTHESIS_PROFILE ?= dev
endif
export HYPOTHESIS_PROFILE

.DEFAULT_GOAL := help
.PHONY: help install test lint typecheck fmt serve bench clean

help:
	@echo "make test    lint, format check, mypy --strict, then the whole pytest suite"
	@echo "make serve   run the server on :8080 (SQLite, default markets, demo users)"
	@echo "make bench   run the engine benchmark"
	@echo "make lint    ruff check + ruff format --check + the layer contracts (lint-imports)"
	@echo "make fmt     ruff format + ruff check --fix"
	@echo "make clean   remove .venv, caches and build artefacts"

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --upgrade pip
	$(BIN)/python -m pip install -e '.[dev]'
	touch $@

install: $(STAMP)

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/lint-imports --no-cache

typecheck: $(STAMP)
	$(BIN)/mypy

test: lint typecheck
	$(BIN)/pytest

fmt: $(STAMP)
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

serve: $(STAMP)
	$(BIN)/crossbook serve --demo

bench: $(STAMP)
	$(BIN)/crossbook bench engine

clean:
	rm -rf $(VENV) build dist .pytest_cache .mypy_cache .ruff_cache .hypothesis
	find . -name __pycache__ -type d -prune -exec rm -rf {} +
	find . -name '*.egg-info' -type d -prune -exec rm -rf {} +
