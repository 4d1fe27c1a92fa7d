# Transaction analytics pipeline. `make help` lists the targets.
SHELL := /bin/bash
VENV ?= .venv
PY := $(VENV)/bin/python
TXN := $(VENV)/bin/txn
# Two installs from the lock files (requirements/, made by `make lock`): the runtime (the
# project with its api, dashboard and dbt extras: what `make demo` runs) and, on top of it, the
# test tools (the dev extra). Each stamp is remade only when its inputs change.
RUNTIME_STAMP := $(VENV)/.installed-runtime
TEST_STAMP := $(VENV)/.installed-test
# `make lock`: uv, pinned, in a virtualenv of its own (not the project's).
UV_VERSION := 0.13.9
LOCK_VENV := .cache/lock-venv
UV := $(LOCK_VENV)/bin/uv
LOCK_OPTS := --python-version 3.11 --python-platform x86_64-unknown-linux-gnu \
             --custom-compile-command 'make lock' --quiet $(LOCK_FLAGS)

.DEFAULT_GOAL := help
.PHONY: help install install-runtime system-deps services services-down services-status \
        clean-data test test-fast demo worker sink prune produce api dashboard dbt bench lint lock clean

help: ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-16s %s\n", $$1, $$2}'

$(RUNTIME_STAMP): requirements/runtime.txt setup.cfg pyproject.toml
	@test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -r requirements/runtime.txt
	$(PY) -m pip install -q --no-deps -e .
	$(PY) -m pip check
	@touch $@

$(TEST_STAMP): $(RUNTIME_STAMP) requirements/test.txt
	$(PY) -m pip install -q -r requirements/test.txt
	$(PY) -m pip check
	@touch $@

install-runtime: $(RUNTIME_STAMP) ## the virtualenv with what the pipeline runs (no test tools)

install: $(TEST_STAMP) system-deps ## the virtualenv, the test tools and the system packages the tests need

lock: $(UV) ## regenerate requirements/*.txt from setup.cfg (LOCK_FLAGS=--upgrade: newest allowed)
	@mkdir -p requirements
	$(UV) pip compile setup.cfg --extra api --extra dashboard --extra dbt $(LOCK_OPTS) \
	  -o requirements/runtime.txt
	$(UV) pip compile setup.cfg --extra api --extra dashboard --extra dbt --extra dev \
	  -c requirements/runtime.txt $(LOCK_OPTS) -o requirements/test.txt
	@sed -i -E '/^--(index-url|extra-index-url|find-links|trusted-host)/d' requirements/*.txt

$(UV):
	python3 -m venv $(LOCK_VENV)
	$(LOCK_VENV)/bin/python -m pip install -q uv==$(UV_VERSION)

system-deps: ## Debian packages and npm tools the browser and API tests use (only what is missing)
	@bash scripts/install-system.sh

services: $(RUNTIME_STAMP) ## start Kafka (KRaft) and FerretDB as local processes (idempotent)
	@$(PY) scripts/services.py start

services-down: ## stop the services this project started
	@$(PY) scripts/services.py stop

services-status: ## report the services
	@$(PY) scripts/services.py status

clean-data: ## wipe the local data (var/): Kafka logs, FerretDB files, tables, logs
	@$(PY) scripts/services.py clean-data

test: install lint ## install what is missing, lint, start the services, run the whole suite, stop them
	@bash scripts/run-tests.sh

test-fast: $(TEST_STAMP) ## unit and property tests only (no services)
	$(PY) -m pytest -m "not integration and not e2e and not browser" -q

demo: $(RUNTIME_STAMP) ## run the whole pipeline locally in the foreground (Ctrl-C stops it)
	@$(PY) scripts/demo.py

worker: $(RUNTIME_STAMP) ## the processing worker (Faust web on BIND_HOST:6066)
	$(TXN) worker -l info

produce: $(RUNTIME_STAMP) ## the producer at TARGET_TPS
	$(TXN) produce

sink: $(RUNTIME_STAMP) ## the sink worker role: topics and rollups into MongoDB (docs/sink.md)
	$(TXN) sink -l info

prune: $(RUNTIME_STAMP) ## delete what has passed its retention (RETENTION_DAYS...; docs/sink.md, Retention)
	$(TXN) prune

.PHONY: bench-sink
bench-sink: $(TEST_STAMP) ## sink write rate and rollup lag (needs make services): bench/results/sink.json
	$(PY) bench/sink_bench.py

.PHONY: bench-producer
bench-producer: $(TEST_STAMP) ## producer benchmark (needs make services): bench/results/producer.json
	$(PY) bench/bench_producer.py

.PHONY: bench-memory
bench-memory: $(TEST_STAMP) ## worker RSS draining 20 days of event time (needs make services; MEMORY_ARGS)
	$(PY) bench/event_time_memory.py $(MEMORY_ARGS)

dbt: $(RUNTIME_STAMP) ## build the dbt marts once (models + tests; marts written back to MongoDB)
	cd dbt && $(abspath $(VENV))/bin/dbt build --profiles-dir .

api: $(RUNTIME_STAMP) ## the REST API (uvicorn views.api:app on BIND_HOST:8000, docs at /docs)
	$(PY) -m uvicorn views.api:app --host $${BIND_HOST:-127.0.0.1} --port $${API_PORT:-8000}

dashboard: $(RUNTIME_STAMP) ## the Panel dashboard (http://localhost:5006/live), reading the API at API_URL
	$(VENV)/bin/panel serve dashboards/live.py --address $${BIND_HOST:-127.0.0.1} \
	  --port $${DASHBOARD_PORT:-5006} --allow-websocket-origin localhost:$${DASHBOARD_PORT:-5006}

.PHONY: longrun
longrun: $(TEST_STAMP) ## 60 min at 1k/s on a 10M history with its own services (LONGRUN_ARGS; docs/longrun.md)
	$(PY) bench/longrun.py $(LONGRUN_ARGS)

bench: $(TEST_STAMP) ## end-to-end benchmark vs a raw Kafka hop (needs make services; docs/benchmarks.md)
	$(PY) bench/bench_pipeline.py $(BENCH_ARGS)

.PHONY: soak
soak: $(TEST_STAMP) ## SOAK_MINUTES (10) at 5k/s, RESTARTS the local broker and FerretDB; checks nothing lost
	$(PY) bench/soak.py --minutes $${SOAK_MINUTES:-10} $(SOAK_ARGS)

lint: $(TEST_STAMP) ## ruff, and mypy --strict on the product's packages (setup.cfg [mypy])
	$(VENV)/bin/ruff check .
	$(VENV)/bin/mypy app agents tables views dashboards

clean: ## remove the virtualenv and caches (keeps var/ data)
	rm -rf $(VENV) .cache .pytest_cache .hypothesis
