# Quick start: `make demo` and `make test`. Each bootstraps .venv on a fresh machine.
# .venv runs on the Lambda runtime's Python (template.yaml's Runtime), which
# scripts/find-python looks for on PATH, then in pyenv's versions; it says what to install
# when there is none. Exact versions of everything come from uv.lock (`make lock` refreshes).
RUNTIME := $(shell sed -n 's/^ *Runtime: python\([0-9][0-9.]*\).*/\1/p' template.yaml | head -n 1)
# Looked up once, and only by the targets that need it (`make clean` does not).
PYTHON = $(eval PYTHON := $(shell scripts/find-python $(RUNTIME)))$(PYTHON)
comma := ,
VENV := .venv
BIN := $(VENV)/bin
UV := $(BIN)/uv
STAMP := $(VENV)/.installed-python$(RUNTIME)
UV_VERSION := $(shell sed -n '/^name = "uv"$$/{n;s/^version = "\(.*\)"$$/\1/p;}' uv.lock)
# uv must use the Python found here, never download one.
export UV_PYTHON_DOWNLOADS := never
# checkov lives in a venv of its own (its pins never meet the project's) and runs offline
# (--skip-download) from tests/infrastructure/test_checkov.py; `make test` requires it.
CHECKOV_VENV := .venv-checkov
CHECKOV := $(CHECKOV_VENV)/bin/checkov
CHECKOV_VERSION := 3.3.30

.PHONY: install demo local test lint typecheck unit bench lock build check-build clean

$(STAMP): uv.lock pyproject.toml
	@test -n "$(PYTHON)"
	@if [ -x $(BIN)/python ] && ! $(BIN)/python -c 'import sys; sys.exit(sys.version_info[:2] != ($(subst .,$(comma),$(RUNTIME))))'; then \
		echo "$(VENV) runs another Python than $(RUNTIME): rebuilding it"; rm -rf $(VENV); fi
	@[ -x $(BIN)/python ] || $(PYTHON) -m venv $(VENV)
	@case "$$($(UV) --version 2>/dev/null)" in "uv $(UV_VERSION)"*) ;; \
		*) $(BIN)/python -m pip install --quiet "uv==$(UV_VERSION)";; esac
	# --compile-bytecode: pip writes .pyc files at install, uv only when asked; without them a
	# shell with PYTHONDONTWRITEBYTECODE=1 compiles moto, cfn-lint and sympy on every start.
	$(UV) sync --locked --extra dev --compile-bytecode --quiet
	@touch $@

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

# Refresh every pin to the newest release the bounds in pyproject.toml allow, then write
# what `sam build` installs (runtime dependencies only, with hashes) and aws-sam-cli's own pins.
lock: $(STAMP)
	$(UV) lock --upgrade
	{ echo "# What \`sam build\` installs into both functions (CodeUri: functions/): the runtime"; \
	  echo "# dependencies, exported from uv.lock by \`make lock\`. Do not edit by hand."; \
	  $(UV) export --frozen --no-dev --no-emit-project --no-header --format requirements-txt; \
	} > functions/requirements.txt
	echo aws-sam-cli | $(UV) pip compile - --upgrade --generate-hashes --no-header --quiet \
		--python-version $(RUNTIME) --universal -o .ci/sam-requirements.txt

# `sam build` with aws-sam-cli in a venv of its own (its pins never meet the project's); it
# needs python$(RUNTIME) on PATH, so the directory of the one found above goes first.
SAM_VENV := .venv-sam
SAM := $(SAM_VENV)/bin/sam

$(SAM): .ci/sam-requirements.txt | $(STAMP)
	@test -n "$(PYTHON)"
	@[ -x $(SAM_VENV)/bin/python ] || $(PYTHON) -m venv $(SAM_VENV)
	$(UV) pip install --quiet --require-hashes --compile-bytecode --python $(SAM_VENV)/bin/python -r .ci/sam-requirements.txt
	@touch $@

build: $(SAM)
	PATH="$(dir $(PYTHON)):$$PATH" SAM_CLI_TELEMETRY=0 $(SAM) build --template-file template.yaml

# The built packages hold the functions' code and the locked runtime dependencies, nothing else.
check-build: build $(STAMP)
	$(BIN)/python -m meterbridge_local.lambda_package .aws-sam/build

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
	rm -rf $(VENV) $(SAM_VENV) $(CHECKOV_VENV) .aws-sam .bench .pytest_cache .mypy_cache \
		.ruff_cache .hypothesis

# --- Template security checks, docs from code, deploy (README "Security", "Deploy") --------

.PHONY: checkov docs deploy

$(CHECKOV):
	@test -n "$(PYTHON)"
	@[ -x $(CHECKOV_VENV)/bin/python ] || $(PYTHON) -m venv $(CHECKOV_VENV)
	$(CHECKOV_VENV)/bin/python -m pip install --quiet 'checkov==$(CHECKOV_VERSION)'

checkov: $(STAMP) $(CHECKOV)
	MB_REQUIRE_CHECKOV=1 $(BIN)/pytest -q tests/infrastructure/test_checkov.py

# README.md's parameter table and docs/configuration.md, from template.yaml and settings.py.
docs: $(STAMP)
	$(BIN)/python scripts/generate_docs.py

# From a clone to a stack: `make build` (the project's own aws-sam-cli and Python), then a
# guided deploy; samconfig.toml names the stack and answers all but the parameters. Needs
# AWS credentials.
deploy: build
	PATH="$(dir $(PYTHON)):$$PATH" SAM_CLI_TELEMETRY=0 $(SAM) deploy --guided
