# Quick start: `make demo` and `make test`. Each bootstraps .venv on a fresh machine.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
# checkov lives in a venv of its own (its pins never meet the project's) and runs offline
# (--skip-download) from tests/infrastructure/test_checkov.py; `make test` requires it.
CHECKOV_VENV := .venv-checkov
CHECKOV := $(CHECKOV_VENV)/bin/checkov
CHECKOV_VERSION := 3.3.30

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

test: lint typecheck $(CHECKOV)
	MB_REQUIRE_CHECKOV=1 $(BIN)/pytest

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
	rm -rf $(VENV) .bench .pytest_cache .mypy_cache .ruff_cache .hypothesis $(CHECKOV_VENV)

# --- Template security checks, docs from code, deploy (README "Security", "Deploy") --------

.PHONY: checkov docs deploy

$(CHECKOV):
	$(PYTHON) -m venv $(CHECKOV_VENV)
	$(CHECKOV_VENV)/bin/python -m pip install --quiet 'checkov==$(CHECKOV_VERSION)'

checkov: $(STAMP) $(CHECKOV)
	MB_REQUIRE_CHECKOV=1 $(BIN)/pytest -q tests/infrastructure/test_checkov.py

# README.md's parameter table and docs/configuration.md, from template.yaml and settings.py.
docs: $(STAMP)
	$(BIN)/python scripts/generate_docs.py

# From a clone to a stack: the AWS SAM CLI, AWS credentials and python3.13 (the functions'
# runtime) on PATH; samconfig.toml names the stack and answers all but the parameters.
deploy:
	@command -v sam >/dev/null || { echo "make deploy needs the AWS SAM CLI (sam): https://docs.aws.amazon.com/serverless-application-model/latest/developerguide/install-sam-cli.html"; exit 2; }
	sam build
	sam deploy --guided
