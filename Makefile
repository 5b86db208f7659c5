# Two commands do all the set-up on a fresh machine:
#   make demo   -> builds .venv if needed, runs the main job on the embedded default
#   make test   -> builds .venv if needed, runs the test suite
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
# Exact torch pair for this machine kind (both come from local disk on Python 3.11 x86_64).
TORCH_PIN := torch==2.14.1 torchvision==0.29.1

.PHONY: venv demo test bench clean

$(BIN)/.installed: pyproject.toml
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet $(TORCH_PIN)
	$(BIN)/python -m pip install --quiet -e '.[dev]' $(TORCH_PIN)
	touch $@

venv: $(BIN)/.installed

demo: venv
	$(BIN)/pairx-plugin demo --out pairx_out/demo

test: venv
	$(BIN)/python -m pytest -q tests

bench: venv
	$(BIN)/python benchmarks/bench_engine.py

clean:
	rm -rf $(VENV) pairx_out
