# Developer and CI entry points. `make test` is what CI runs (through .ci/run).
#
#   make venv            create .venv and install the project editable with the dev extras
#   make services        install (if missing) and start private PostgreSQL, Redis (+ TLS, + a six-node cluster), Kafka and S3 (MinIO) for tests
#   make jars            fetch the Kafka broker, the Flink Kafka connector and delta-spark from Maven Central (cached)
#   make flink-env       create .venv-flink (PyFlink 2.2, its own pyarrow/redis) unless up to date
#   make test            venv + jars + flink-env + services + pytest over tests/, then stop what it started
#                        (extra pytest arguments: make test PYTEST_ARGS="-k online -x";
#                         a subset: make test TESTS=tests/test_services.py)
#   make demo            run examples/quickstart.py in the venv
#   make stop-services   stop the services started by .ci/services.sh in this checkout

SHELL := /bin/bash
.SHELLFLAGS := -eu -o pipefail -c
.DEFAULT_GOAL := help

PYTHON ?= python3
VENV := .venv
VENV_PY := $(VENV)/bin/python
# Written after a successful install; older than pyproject.toml means "install again".
VENV_STAMP := $(VENV)/.featurestore-installed
SERVICES := .ci/services.sh
PYTEST_ARGS ?=
TESTS ?= tests/

.PHONY: help venv jars flink-env services test demo stop-services

help:
	@sed -n '3,12p' Makefile | sed 's/^# \{0,1\}//'

venv: $(VENV_STAMP)

$(VENV_STAMP): pyproject.toml
	@if [ ! -x "$(VENV_PY)" ]; then \
		echo "+ $(PYTHON) -m venv $(VENV)"; \
		$(PYTHON) -m venv $(VENV); \
	fi
	@echo "+ $(VENV_PY) -m pip install -e '.[dev]'"
	@$(VENV_PY) -m pip install --disable-pip-version-check -q -e '.[dev]'
	@touch $@

# Installs Java and Maven from Debian's packages if missing; each jar folder is skipped while its
# stamp matches .ci/jvm/pom.xml.
jars:
	@bash $(SERVICES) install kafka
	@bash $(SERVICES) jars flink-kafka spark-delta

# Idempotent (a stamp in the venv); the first run downloads PyFlink 2.2 and its pins (~1-2 min).
flink-env: venv
	@$(VENV_PY) -m featurestore.streaming.env ensure

services:
	@bash $(SERVICES) start

stop-services:
	@bash $(SERVICES) stop

# One recipe so the record of what this run started survives until the stop at the end; the
# services are stopped on success, failure and interrupt alike, and pytest's exit code is kept.
test: venv jars flink-env
	@record="$$(mktemp)"; \
	cleanup() { bash $(SERVICES) stop --from "$$record" || true; }; \
	trap cleanup EXIT; \
	trap 'exit 130' INT TERM; \
	bash $(SERVICES) start --record "$$record"; \
	eval "$$(bash $(SERVICES) env)"; \
	export FS_TEST_POSTGRES_URL FS_TEST_REDIS_URL FS_REDIS_SERVER_BIN FS_TEST_REDIS_CLUSTER_URL FS_TEST_KAFKA_BOOTSTRAP; \
	echo "+ $(VENV_PY) -m pytest $(TESTS) $(PYTEST_ARGS)"; \
	rc=0; $(VENV_PY) -m pytest $(TESTS) $(PYTEST_ARGS) || rc=$$?; \
	if [ $$rc -ne 0 ]; then echo "pytest exited with code $$rc"; fi; \
	exit $$rc

demo: venv
	$(VENV_PY) examples/quickstart.py
