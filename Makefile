# Two commands do all the set-up on a fresh machine:
#   make demo   -> builds .venv if needed, runs the main job on the embedded default
#   make test   -> builds .venv if needed, runs the test suite, then the wildlife-tools 1.x phase
#                  (make test-fast: without slow/browser tests; make lint: ruff + mypy)
# Both install every extra ('.[all,dev]'): the wildlife-tools pipeline, the service and the test tools.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
# Exact torch pair for this machine kind (both come from local disk on Python 3.11 x86_64).
TORCH_PIN := torch==2.14.1 torchvision==0.29.1

.PHONY: venv demo test test-fast lint bench clean

$(BIN)/.installed: pyproject.toml
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet $(TORCH_PIN)
	$(BIN)/python -m pip install --quiet -e '.[all,dev]' $(TORCH_PIN)
	touch $@

venv: $(BIN)/.installed

demo: venv
	$(BIN)/pairx-plugin demo --out pairx_out/demo

# the wildlife-tools 1.x phase: the adapter against the real 1.0.3 wheel from ../shared/wheels (an overlay on .venv)
test: venv
	$(BIN)/python -m pytest -q tests
	PYTHON=$(BIN)/python bash tests/run_wildlife_v1.sh

test-fast: venv
	$(BIN)/python -m pytest -q -m "not slow and not browser" tests

# ruff (lint + format check) and mypy, configured in pyproject.toml
lint: venv
	$(BIN)/python -m ruff check .
	$(BIN)/python -m ruff format --check .
	$(BIN)/python -m mypy

bench: venv
	$(BIN)/python benchmarks/bench_engine.py

clean:
	rm -rf $(VENV) .venv-wt1 pairx_out
