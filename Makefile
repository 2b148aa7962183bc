# lakeshard — `make demo` and `make test` do all the set-up on a fresh machine.
SHELL := /bin/bash
.DEFAULT_GOAL := help

PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
export LAKESHARD_CACHE ?= $(HOME)/.cache/lakeshard
export PIP_DISABLE_PIP_VERSION_CHECK := 1
# One environment, two stamps: the demo's (lakeshard[spark,notebook] and the JVM artifacts) and the
# test stamp on top of it (torch and the test stack), so `make demo` after `make test` installs
# nothing, and `make demo` on a fresh machine downloads neither torch nor the test stack.
DEMO_STAMP := $(VENV)/.lakeshard-demo
TEST_STAMP := $(VENV)/.lakeshard-test
PYTEST_ARGS ?=
# The suite waits more than it computes (JVM starts, subprocesses, servers): two workers, each
# with its own SparkSession and servers, a test file at a time (its module fixtures stay whole).
TEST_WORKERS ?= 2

.PHONY: help env demo test check test-minio lint format bench large chaos faults autoscaling image image-test maintain-long clean

help: ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-11s %s\n", $$1, $$2}'

$(PY):
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip

$(DEMO_STAMP): setup.cfg pyproject.toml pipelines/jvm/pom.xml | $(PY)
	$(PY) -m pip install -q -e '.[spark,notebook]'
	$(PY) -m pipelines.jvm resolve
	$(PY) -m pipelines.jvm defaults
	@touch $@

$(TEST_STAMP): $(DEMO_STAMP) setup.cfg pyproject.toml
	$(PY) -m pip install -q -e '.[spark,notebook,torch,test]'
	@touch $@

env: $(TEST_STAMP) ## create .venv with everything (spark, notebook, torch, test) and the JVM artifacts

demo: $(DEMO_STAMP) ## ingest the bundled sample data twice into ./lake and print a summary
	$(PY) -m pipelines.demo

# Debian packages the suite uses where root can install them: the status page test's browser, and
# what the image test builds with.
TEST_PACKAGES := chromium fonts-dejavu-core buildah debootstrap

test: env lint ## lint, type-check and run the whole suite (starts S3 server + Spark cluster)
	bash infra/debian/packages.sh $(TEST_PACKAGES)
	$(PY) -m pytest -n $(TEST_WORKERS) --dist loadfile -m "not long" $(PYTEST_ARGS)

check: env lint ## lint, type-check and the unit tier: no JVM, no servers, no slow tests
	$(PY) -m pytest -m "not jvm and not slow" $(PYTEST_ARGS)

test-minio: env ## run the S3 suite against MinIO built from the Go module proxy
	bash infra/s3/build_minio.sh
	LAKESHARD_S3_SERVER=minio LAKESHARD_MINIO_BIN=$(LAKESHARD_CACHE)/bin/minio \
		$(PY) -m pytest -m s3 $(PYTEST_ARGS)

lint: env ## ruff (lint + format check) and mypy
	$(VENV)/bin/ruff check pipelines jobs tests bench infra
	$(VENV)/bin/ruff format --check pipelines jobs tests bench infra
	$(VENV)/bin/mypy

format: env ## apply ruff's formatting and safe fixes
	$(VENV)/bin/ruff format pipelines jobs tests bench infra
	$(VENV)/bin/ruff check --fix pipelines jobs tests bench infra

BENCH_SCALE ?= 1
bench: env ## benchmarks: ratios against a baseline measured in the same run (BENCH_SCALE=0.25: smaller inputs)
	$(PY) bench/report.py --scale $(BENCH_SCALE)
	$(PY) bench/dedup.py
	$(PY) bench/loader.py
	$(PY) bench/gpu_feed.py
	$(PY) bench/maintain.py
	$(PY) bench/evolution.py

large: env ## ingest a generated 3 GB input as a user would, at the default memory; print time and peak memory
	$(PY) bench/large_input.py

TRIALS ?= 100
S3 ?= 0
chaos: env ## kill -9 ingest at random moments TRIALS times (default 100; S3=1: lake and sources on S3); print the tally
	LAKESHARD_CHAOS_TRIALS=$(TRIALS) LAKESHARD_CHAOS_S3=$(S3) $(PY) -m pytest tests/test_chaos.py -s -p no:cacheprovider

faults: env ## the whole storage fault matrix: six faults, one run per fault and phase (make test: three faults); print it
	LAKESHARD_FAULTS_EACH_PHASE=1 $(PY) -m pytest tests/test_storage_faults.py -s -p no:cacheprovider

autoscaling: env ## dynamic vs static executors on a standalone cluster: executors over time, wall, executor-seconds
	$(PY) -m pytest tests/test_autoscaling.py -s -p no:cacheprovider

image: env ## build lakeshard's image with buildah (or docker): infra/docker/build.sh
	bash infra/docker/build.sh

image-test: env ## build the image on a debootstrap base, ingest the sample inside it, read it back
	bash infra/debian/packages.sh buildah debootstrap
	$(PY) -m pytest tests/test_image.py -p no:cacheprovider

maintain-long: env ## the maintenance test after 20 small ingests (make test runs it after 6)
	LAKESHARD_MAINTAIN_INGESTS=20 $(PY) -m pytest tests/test_maintain.py -p no:cacheprovider

clean: ## remove the environment, the demo lake and caches inside the checkout
	rm -rf $(VENV) lake build *.egg-info .pytest_cache .mypy_cache .ruff_cache
