# TrailGuard. The two commands a newcomer needs: `make demo` and `make test`.
SHELL := /bin/bash
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(CURDIR)/$(VENV)/bin
UV := $(BIN)/uv

# Airflow lives inside the project: SQLite metadata DB, this project's DAGs and plugins, no examples.
export AIRFLOW_HOME ?= $(CURDIR)/.airflow
export AIRFLOW__CORE__DAGS_FOLDER := $(CURDIR)/dags
export AIRFLOW__CORE__PLUGINS_FOLDER := $(CURDIR)/plugins
export AIRFLOW__CORE__LOAD_EXAMPLES := False
export AIRFLOW__DATABASE__SQL_ALCHEMY_CONN ?= sqlite:///$(AIRFLOW_HOME)/airflow.db
export GX_ANALYTICS_ENABLED := false
export MLFLOW_ENABLE_TELEMETRY := false
export DO_NOT_TRACK := true

.PHONY: help install install-test chromium airflow-db demo test test-e2e test-fast lint fmt lock bench clean
.DEFAULT_GOAL := help

help: ## show the targets
	@grep -E '^[a-z0-9-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-12s %s\n", $$1, $$2}'

$(VENV)/.installed: requirements.lock pyproject.toml
	@test -n "$(PYTHON)" || { echo "Python 3.11 not found: install it or run make PYTHON=/path/to/python3.11"; exit 1; }
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	@test -x $(UV) || $(BIN)/python -m pip install --quiet uv
	$(UV) pip install --python $(BIN)/python --compile-bytecode --quiet -r requirements.lock
	$(UV) pip install --python $(BIN)/python --compile-bytecode --quiet --no-deps -e .
	@touch $@

$(VENV)/.installed-test: $(VENV)/.installed requirements-test.lock
	$(UV) pip install --python $(BIN)/python --compile-bytecode --quiet -r requirements-test.lock
	@$(MAKE) --no-print-directory chromium
	@touch $@

# The browser tests drive the Debian chromium package through Playwright (no browser download); without
# root and apt-get they skip, saying so.
chromium:
	@command -v chromium >/dev/null && exit 0; \
	if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
		echo "installing chromium (apt) for the browser tests"; \
		(apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null) \
			|| echo "chromium could not be installed: the browser tests will skip"; \
	else echo "no chromium (install it as root: apt-get install chromium): the browser tests will skip"; fi

install: $(VENV)/.installed ## create .venv from the lock (uv, compiled bytecode)

install-test: $(VENV)/.installed-test

$(AIRFLOW_HOME)/.migrated: $(VENV)/.installed
	@mkdir -p $(AIRFLOW_HOME)
	$(BIN)/airflow db migrate > $(AIRFLOW_HOME)/migrate.log 2>&1 || { tail -20 $(AIRFLOW_HOME)/migrate.log; exit 1; }
	@touch $@

airflow-db: $(AIRFLOW_HOME)/.migrated ## create Airflow's SQLite metadata DB under .airflow/

demo: install airflow-db ## run the whole pipeline on generated demo data through the real DAGs
	PATH=$(BIN):$$PATH $(BIN)/trailguard --data $(CURDIR)/demo/data demo --logs $(CURDIR)/demo/logs

# The suites (README "Development"): `make test` is everything but the suites that start a whole stack;
# those run with `make test-e2e` (make up's stack, in chromium too) and `make test-scale` (make up-scale's);
# CI's .ci/run runs all three. PYTEST_ARGS adds options, e.g. make test PYTEST_ARGS="-x tests/model".
test: install-test ## the test suite, but for the whole-stack suites (test-e2e, test-scale): about 8 minutes
	PATH=$(BIN):$$PATH $(BIN)/python -m pytest -m "not e2e and not scale" $(PYTEST_ARGS)

test-e2e: install-test ## the end-to-end suites: make up's stack driven through its REST API and in chromium
	PATH=$(BIN):$$PATH $(BIN)/python -m pytest -m "e2e and not scale" $(PYTEST_ARGS)

test-fast: install-test ## the fast tests only (no DAG runs or servers)
	PATH=$(BIN):$$PATH $(BIN)/python -m pytest -m "not slow and not e2e and not scale" $(PYTEST_ARGS)

lint: install-test ## ruff check (with Airflow's AIR rules) and ruff format --check over the whole tree
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

fmt: install-test ## format the whole tree with ruff (and apply ruff's safe fixes)
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

bench: install ## time ingestion of 1M events (1 and 2 workers, the naive way) and the other stages: bench/results.json
	PATH=$(BIN):$$PATH $(BIN)/python bench/run.py $(BENCH_ARGS)

lock: ## re-resolve requirements*.txt into the pinned locks
	$(UV) pip compile requirements.txt --python-version 3.11 --annotation-style line -o requirements.lock
	$(UV) pip compile requirements-test.txt -c requirements.lock --python-version 3.11 --annotation-style line -o requirements-test.lock

clean: ## remove the demo output and Airflow's local state (keeps .venv)
	rm -rf demo .airflow .run

# The local stack on 127.0.0.1 (scripts/stack.py): Airflow (LocalExecutor, SQLite), MLflow server, mail catcher.
# Ports: TRAILGUARD_AIRFLOW_PORT (8080), TRAILGUARD_MLFLOW_PORT (5000), TRAILGUARD_SMTP_PORT (1025),
# TRAILGUARD_MAIL_UI_PORT (8025). Data: TRAILGUARD_DATA (default demo/data). PIDs and logs: .run/
.PHONY: up down status up-scale scale-deps test-scale
up: ## start Airflow, MLflow and a mail catcher in the background (demo data by default)
	@test -x $(BIN)/airflow || $(MAKE) install
	@PATH=$(BIN):$$PATH $(BIN)/python scripts/stack.py up

down: ## stop everything `make up` and `make up-scale` started, and check that nothing is left
	@$(BIN)/python scripts/stack_scale.py down

status: ## show what `make up`/`make up-scale` started, whether it is healthy, which worker ran what
	@$(BIN)/python scripts/stack_scale.py status

# The scale-out stack (scripts/stack_scale.py): docker-compose.yaml's profile `celery` without Docker.
# PostgreSQL 15 and Redis (Debian), a moto S3 server holding the data root s3://trailguard/data, MLflow on
# Postgres with artifacts in S3, Airflow with CeleryExecutor and two Celery workers. Ports as `make up`,
# plus TRAILGUARD_POSTGRES_PORT (5433), TRAILGUARD_REDIS_PORT (6380), TRAILGUARD_S3_PORT (9000).
# State, PIDs and logs: .run/scale/
scale-deps: ## install PostgreSQL and Redis (Debian packages; as root) for make up-scale
	@if [ -x /usr/lib/postgresql/15/bin/postgres ] && command -v redis-server >/dev/null; then exit 0; \
	elif [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
		echo "installing postgresql and redis-server (apt) for make up-scale"; \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq redis-server postgresql >/dev/null; \
	else echo "make up-scale needs PostgreSQL 15 and Redis: as root run apt-get install -y redis-server postgresql"; exit 1; fi

up-scale: install-test scale-deps ## the scale-out stack: Postgres, Redis, S3 (moto), MLflow, Airflow + 2 Celery workers
	@PATH=$(BIN):$$PATH $(BIN)/python scripts/stack_scale.py up

test-scale: install-test ## the scale-out stack end to end (tests/test_stack_scale.py, about 15 minutes)
	PATH=$(BIN):$$PATH $(BIN)/python -m pytest -m scale tests/test_stack_scale.py $(PYTEST_ARGS)
