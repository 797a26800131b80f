# Quick start: `make demo` and `make test`. Each bootstraps .venv on a fresh machine.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: install demo local test lint typecheck unit bench clean

$(STAMP): pyproject.toml
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else "meterbridge needs Python 3.11 or newer")'
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	@touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(BIN)/meterbridge demo

local: $(STAMP)
	$(BIN)/meterbridge local

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/cfn-lint template.yaml

typecheck: $(STAMP)
	$(BIN)/mypy

test: lint typecheck
	$(BIN)/pytest

# The worker benchmark also measures its ledger on dynalite (DynamoDB API on Node.js),
# installed with npm into .bench/node; without npm it measures on moto only.
DYNALITE := .bench/node/node_modules/.bin/dynalite

$(DYNALITE):
	npm install --prefix .bench/node --no-audit --no-fund --silent dynalite@4.0.0

bench: $(STAMP)
	@if command -v npm >/dev/null; then $(MAKE) --no-print-directory $(DYNALITE); \
	else echo "npm not found: bench:worker measures its ledger on moto only"; fi
	$(BIN)/python -m bench

clean:
	rm -rf $(VENV) .bench .pytest_cache .mypy_cache .ruff_cache .hypothesis
