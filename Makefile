# crossbook developer commands. `make test` and `make serve` each do all set-up
# on a fresh machine: they create .venv and install the project into it
# (editable, with the dev extra), re-installing only when pyproject.toml changes,
# and compile the domain with mypyc (needs a C compiler) when its sources changed.

PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.install.stamp

# The compiled domain (tools/compile_domain.py): its manifest is the target. The
# directory is a prerequisite too, so that adding or removing a module rebuilds; the
# script itself compares contents and builds only if something differs.
DOMAIN_DIR       := src/crossbook/domain
DOMAIN_SOURCES   := $(wildcard $(DOMAIN_DIR)/*.py $(DOMAIN_DIR)/*.pyi)
DOMAIN_MANIFEST  := $(DOMAIN_DIR)/_compiled_build.json

# CI=true selects the thorough hypothesis profile; an explicit HYPOTHESIS_PROFILE wins.
ifeq ($(CI),true)
HYPOTHESIS_PROFILE ?= ci
else
HYPOTHESIS_PROFILE ?= dev
endif
export HYPOTHESIS_PROFILE

.DEFAULT_GOAL := help
.PHONY: help install compile test lint typecheck fmt serve bench clean

help:
	@echo "make test    lint, format check, mypy --strict, then the whole pytest suite on the"
	@echo "             compiled domain, then the unit and property tests on the pure-Python one"
	@echo "make compile compile crossbook.domain with mypyc (done by install, test, serve, bench)"
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

$(DOMAIN_MANIFEST): $(STAMP) $(DOMAIN_SOURCES) $(DOMAIN_DIR) tools/compile_domain.py
	$(BIN)/python tools/compile_domain.py

compile: $(DOMAIN_MANIFEST)

install: $(STAMP) compile

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/lint-imports --no-cache

typecheck: $(STAMP)
	$(BIN)/mypy

# The whole suite on the compiled domain (an import error if it is not the one that
# runs), then the unit and property tests once more on the pure-Python source.
test: lint typecheck compile
	CROSSBOOK_EXPECT_COMPILED=1 $(BIN)/pytest
	CROSSBOOK_PURE_PYTHON=1 $(BIN)/pytest tests/unit tests/property

fmt: $(STAMP)
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

serve: compile
	$(BIN)/crossbook serve --demo

bench: compile
	$(BIN)/crossbook bench engine

clean:
	rm -rf $(VENV) build dist .pytest_cache .mypy_cache .ruff_cache .hypothesis
	rm -f $(DOMAIN_MANIFEST) $(DOMAIN_DIR)/*.so $(DOMAIN_DIR)/*.pyd src/crossbook_domain__mypyc.*
	find . -name __pycache__ -type d -prune -exec rm -rf {} +
	find . -name '*.egg-info' -type d -prune -exec rm -rf {} +
