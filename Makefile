# Set-up and the two everyday commands. `make demo` and `make test` both create .venv first.
PYTHON ?= python3
VENV   ?= .venv
PY      = $(VENV)/bin/python
PIP     = $(PY) -m pip
# The CPU build of torch, pinned. Installed before anything that depends on torch, so that no
# requirement pulls the multi-GB CUDA build. Uses a local wheel when pip finds one (PIP_FIND_LINKS),
# otherwise PyTorch's CPU index.
TORCH   = torch==2.13.0
TORCH_INDEX ?= https://download.pytorch.org/whl/cpu

.PHONY: install demo test test-all lint bench-engine bench-proposer default-model clean

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PIP) install --upgrade pip
	$(PIP) install $(TORCH) || $(PIP) install $(TORCH) --index-url $(TORCH_INDEX)
	$(PIP) install -e '.[train,bench,dev]'
	touch $@

install: $(VENV)/.installed

## The main job on the embedded default: neural search with the shipped model vs classic.
demo: install
	$(VENV)/bin/ttsr demo

## The test suite (slow tests excluded; `make test-all` runs them too).
test: install
	$(VENV)/bin/pytest -q -m "not slow" -p no:cacheprovider

test-all: install
	$(VENV)/bin/pytest -q -p no:cacheprovider

lint: install
	$(VENV)/bin/ruff check ttsr_bridge tests

bench-engine: install
	$(PY) -m ttsr_bridge.bench.engine_speed --json

bench-proposer: install
	$(PY) -m ttsr_bridge.bench.proposer_speed --model default --json

clean:
	rm -rf $(VENV) build dist *.egg-info .pytest_cache

## Rebuild the shipped default proposer from scratch on CPU (~1 h on 2 cores):
## traces of the pysr preset on 150 synthetic problems → 3% of the moves → tiny model → ONNX.
DEFAULT_RUN ?= runs/default_model
default-model: install
	$(VENV)/bin/ttsr traces collect --config traces/configs/default_model.yaml --out $(DEFAULT_RUN)/traces
	$(VENV)/bin/ttsr traces convert --in $(DEFAULT_RUN)/traces --out $(DEFAULT_RUN)/dataset --sample 0.03 --seed 0 --overwrite
	$(VENV)/bin/ttsr train --config training/configs/default_cpu.yaml --data $(DEFAULT_RUN)/dataset --out $(DEFAULT_RUN)/run --device cpu --resume
	$(VENV)/bin/ttsr export --run $(DEFAULT_RUN)/run --out ttsr_bridge/data/default_model.onnx --weights int8 --graph-version 3
