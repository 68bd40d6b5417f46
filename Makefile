# capsched: `make run` starts the main job, `make test` runs the whole suite.
# Each target creates the virtualenv when it is missing, so each works on a fresh clone.

PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
CONFIG ?= examples/capsched.toml
export CAPSCHED_CONFIG ?= $(CONFIG)

.PHONY: run run-prometheus test check bench scenarios db-upgrade install clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e ".[dev]"
	touch $(STAMP)

install: $(STAMP)

## The main job: embedded PostgreSQL unless CAPSCHED_DATABASE_URL is set, migrate, load the
## bundled example, then run the daemon in the foreground (Ctrl-C stops it).
run: $(STAMP)
	$(BIN)/capsched db upgrade
	$(BIN)/capsched ingest examples/traces/servegen_m-small.csv --deployment m-small
	$(BIN)/capsched status
	$(BIN)/capsched $(RUN_ARGS)

RUN_ARGS ?= run --replay-from 2025-01-13T00:00Z --speed 60

## A pull source end to end without a cloud account: a real Prometheus (Debian package
## `prometheus`) serves the same trace as counters; `capsched pull` backfills a week from
## it, then the daemon's pull job reads each replayed minute (examples/prometheus/).
run-prometheus: $(STAMP)
	BIN=$(BIN) examples/prometheus/run.sh

test: $(STAMP)
	$(BIN)/python -m pytest $(PYTEST_ARGS)

check: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/mypy

bench: $(STAMP)
	$(BIN)/python bench/run_all.py

## Issue #9's scenario suite: one backtest per traffic shape, one table row each
## (bench/out/scenarios.md). SCENARIOS_ARGS="--quick" or "--only level-shift".
scenarios: $(STAMP)
	$(BIN)/python bench/scenarios/run.py $(SCENARIOS_ARGS)

db-upgrade: $(STAMP)
	$(BIN)/capsched db upgrade

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
