# Transaction analytics pipeline. `make help` lists the targets.
SHELL := /bin/bash
VENV ?= .venv
PY := $(VENV)/bin/python
TXN := $(VENV)/bin/txn
STAMP := $(VENV)/.installed

.DEFAULT_GOAL := help
.PHONY: help install system-deps services services-down services-status clean-data test \
        test-fast demo worker sink produce api dashboard dbt bench lint clean

help: ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-16s %s\n", $$1, $$2}'

$(STAMP): setup.cfg pyproject.toml
	@test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[api,dashboard,dbt,dev]'
	@touch $(STAMP)

install: $(STAMP) system-deps ## create the virtualenv and install everything the tests need

system-deps: ## Debian packages and npm tools the browser and API tests use (only what is missing)
	@bash scripts/install-system.sh

services: $(STAMP) ## start Kafka (KRaft) and FerretDB as local processes (idempotent)
	@$(PY) scripts/services.py start

services-down: ## stop the services this project started
	@$(PY) scripts/services.py stop

services-status: ## report the services
	@$(PY) scripts/services.py status

clean-data: ## wipe the local data (var/): Kafka logs, FerretDB files, tables, logs
	@$(PY) scripts/services.py clean-data

test: install ## install what is missing, start the services, run the whole suite, stop them
	@bash scripts/run-tests.sh

test-fast: $(STAMP) ## unit and property tests only (no services)
	$(PY) -m pytest -m "not integration and not e2e and not browser" -q

demo: install ## run the whole pipeline locally in the foreground (Ctrl-C stops it)
	@$(PY) scripts/demo.py

worker: $(STAMP) ## the processing worker (Faust web on :6066)
	$(TXN) worker -l info

produce: $(STAMP) ## the producer at TARGET_TPS
	$(TXN) produce

sink: $(STAMP) ## the sink worker role: topics and rollups into MongoDB (docs/sink.md)
	$(TXN) sink -l info

.PHONY: bench-sink
bench-sink: $(STAMP) ## sink write rate and rollup lag (needs make services): bench/results/sink.json
	$(PY) bench/sink_bench.py

.PHONY: bench-producer
bench-producer: $(STAMP) ## producer benchmark (needs make services): bench/results/producer.json
	$(PY) bench/bench_producer.py

dbt: $(STAMP) ## build the dbt marts once (models + tests; marts written back to MongoDB)
	cd dbt && $(abspath $(VENV))/bin/dbt build --profiles-dir .

api: $(STAMP) ## the REST API (uvicorn views.api:app on :8000, docs at /docs)
	$(PY) -m uvicorn views.api:app --host 127.0.0.1 --port $${API_PORT:-8000}

dashboard: $(STAMP) ## the Panel dashboard (http://localhost:5006/app), reading the API at API_URL
	$(VENV)/bin/panel serve dashboards/app.py --port $${DASHBOARD_PORT:-5006} \
	  --allow-websocket-origin localhost:$${DASHBOARD_PORT:-5006}

bench: $(STAMP) ## end-to-end benchmark vs a raw Kafka hop (needs make services; docs/benchmarks.md)
	$(PY) bench/bench_pipeline.py $(BENCH_ARGS)

.PHONY: soak
soak: $(STAMP) ## SOAK_MINUTES (10) at 5k/s, RESTARTS the local broker and FerretDB; checks nothing lost
	$(PY) bench/soak.py --minutes $${SOAK_MINUTES:-10} $(SOAK_ARGS)

lint: $(STAMP) ## ruff and mypy
	$(VENV)/bin/ruff check .
	$(VENV)/bin/mypy app agents tables views

clean: ## remove the virtualenv and caches (keeps var/ data)
	rm -rf $(VENV) .cache .pytest_cache .hypothesis
