# Two commands for a newcomer:  `make demo`  and  `make test`  (each sets itself up first).
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
# Benchmark data: a folder laid out like shared/benchmarks (see README, "Data").
QTRUST_DATA_DIR ?= $(abspath ../shared/benchmarks)
export QTRUST_DATA_DIR
export RAY_USAGE_STATS_ENABLED ?= 0

.PHONY: demo test setup clean

$(BIN)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	# The CPU build of torch 2.13 (on these machines it is already on disk).
	$(BIN)/pip install --quiet "torch==2.13.0"
	$(BIN)/pip install --quiet -e ".[quant,test]"
	touch $@

setup: $(BIN)/.installed

demo: setup
	$(BIN)/qtrust run examples/demo.yaml

test: setup
	$(BIN)/python -m pytest

clean:
	rm -rf qtrust-runs mlflow.db mlruns .pytest_cache
