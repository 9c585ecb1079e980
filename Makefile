# One entry point for every workflow. Targets install what they need.
SHELL := /bin/bash
.DEFAULT_GOAL := help

export PATH := $(CURDIR)/.tools/bin:$(HOME)/.local/bin:$(PATH)
VENV    := .venv
PY      := $(VENV)/bin/python
MLOPS   := $(VENV)/bin/mlops
PYTEST  := $(VENV)/bin/pytest
UV_VERSION := 0.13.8

.PHONY: help
help: ## list targets
	@grep -hE '^[a-zA-Z_-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-16s %s\n", $$1, $$2}'

## ---------------------------------------------------------------- setup
.PHONY: uv install
uv:
	@command -v uv >/dev/null || { echo "uv not found: installing uv==$(UV_VERSION) from PyPI"; \
	  python3 -m pip install --quiet --user "uv==$(UV_VERSION)"; }

install: uv node_modules/.bin/azurite ## install Python (uv) and Node (Azurite) dependencies
	uv sync --frozen --compile-bytecode

node_modules/.bin/azurite: package.json package-lock.json
	@command -v npm >/dev/null || { echo "npm not found: install Node.js 20 (https://nodejs.org)"; exit 1; }
	npm ci --no-audit --no-fund
	@touch $@

## ---------------------------------------------------------------- local platform
.PHONY: up down status
up: install ## start Azurite, MLflow, Airflow locally and run the whole job
	$(MLOPS) up

down: ## stop the local platform (keeps data; PURGE=1 deletes .local/)
	$(MLOPS) down $(if $(PURGE),--purge,)

status: ## show the local platform's processes
	$(MLOPS) status

## ---------------------------------------------------------------- tests
.PHONY: test test-unit test-integration lint
test: install ## run all tests (unit, DAG, integration, chart, scan)
	$(PYTEST) -p no:cacheprovider

test-unit: install
	$(PYTEST) tests/unit

test-integration: install
	$(PYTEST) tests/integration

lint: install
	$(VENV)/bin/ruff check airflow_project tests loadtest

## ---------------------------------------------------------------- benchmarks
.PHONY: bench-pipeline
bench-pipeline: install ## time prepare+train on 100k and 1M rows (reports/)
	$(PY) -m airflow_project.bench.pipeline
