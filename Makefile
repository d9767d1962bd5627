# Evergreen: `make run` (set up + the main job on the simulator), `make ui`, `make test` (all, on every
# core), `make test-fast` (no servers or subprocesses), `make lint` (ruff, mypy),
# `make backtest DATASET=... [WARMUP=14] [OUT=...] [DAYS=N] [LABEL_DELAY=D]` (replay your own history
# through the loop, against the baselines), `make demo` (the backtest on 60 simulated days with a
# firmware roll-out),
# `make rollback [VERSION=v...]` (serve the previous or a named version again),
# `make broker` / `make collect` / `make devices DAY=...` (live telemetry over MQTT, see README).
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
# Each dataset keeps its files in data/<dataset name>/ (Dagster home in its dagster_home/), chosen in
# assets/resources.py and deploy/home.py; DATA_DIR=... puts them there instead.
ifdef DATA_DIR
export EVERGREEN_DATA_DIR := $(DATA_DIR)
export DAGSTER_HOME := $(DATA_DIR)/dagster_home
endif
DATA_ROOT := $(or $(DATA_DIR),$(CURDIR)/data)
UI_PORT ?= 3000

MQTT_DATASET ?= examples/mqtt/dataset.yaml

.PHONY: setup run ui test test-fast lint bench backtest demo rollback broker collect devices clean

setup: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[test]'
	touch $@

run: setup
	$(BIN)/python -m deploy.run_main --days 14

# exec: make's shell steps aside; deploy.ui stops dagster dev and all its children on SIGTERM or SIGINT.
ui: setup
	exec $(BIN)/python -m deploy.ui --host 127.0.0.1 --port $(UI_PORT)

# Test files are spread over one worker per core (a file's tests share its fixtures and stay together), in the
# order tests/conftest.py gives them (the longest first, not xdist's most-tests-first);
# TEST_WORKERS=0 runs them in this process.
TEST_WORKERS ?= auto
test: setup
	$(BIN)/python -m pytest tests -n $(TEST_WORKERS) --dist loadfile --no-loadscope-reorder

# The in-process tests only (no server, no subprocess): what to run while working.
test-fast: setup
	$(BIN)/python -m pytest tests -m "not slow" -n $(TEST_WORKERS) --dist loadfile --no-loadscope-reorder

lint: setup
	$(BIN)/ruff check .
	$(BIN)/mypy

WARMUP ?= 14
backtest: setup
	@test -n "$(DATASET)" || { echo "make backtest needs DATASET=path/to/dataset.yaml" >&2; exit 2; }
	$(BIN)/python -m deploy.backtest --dataset $(DATASET) --warmup $(WARMUP) \
		--out $(or $(OUT),$(CURDIR)/data/backtests/$(shell date +%Y%m%d-%H%M%S)) \
		$(if $(DAYS),--days $(DAYS)) $(if $(LABEL_DELAY),--label-delay $(LABEL_DELAY))

demo: setup
	rm -rf $(DATA_ROOT)/replay
	$(BIN)/python -m deploy.replay --days 60 --rollout-day 30 --out $(DATA_ROOT)/replay

rollback: setup
	$(BIN)/python -m deploy.rollback $(if $(VERSION),--version $(VERSION))

bench: setup
	$(BIN)/python -m benchmarks.all --record

broker: setup
	$(BIN)/python -m deploy.broker

collect: setup
	EVERGREEN_DATASET=$(MQTT_DATASET) $(BIN)/python -m deploy.collect

devices: setup
	EVERGREEN_DATASET=$(MQTT_DATASET) $(BIN)/python -m deploy.devices --day $(DAY) --malformed 0.02

clean:
	rm -rf $(VENV) $(DATA_ROOT)
