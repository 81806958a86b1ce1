# vlmlab: `make demo` sets everything up and runs the main job; `make test` sets up and runs the tests.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
# Torch is installed first, pinned; everything after goes through constraints.txt so nothing upgrades it.
# GPU users: install your CUDA torch into $(VENV) first and set TORCH_SPEC to the version you installed.
TORCH_SPEC ?= torch==2.13.0
STAMP  := $(VENV)/.installed

.PHONY: setup demo test lint bench clean

setup: $(STAMP)

$(STAMP): pyproject.toml constraints.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q "$(TORCH_SPEC)"
	$(PY) -m pip install -q -c constraints.txt -e ".[dev]"
	touch $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/vlmlab demo

test: $(STAMP) lint
	$(PY) -m pytest tests

lint: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

bench: $(STAMP)
	$(PY) benchmarks/bench_train.py
	$(PY) benchmarks/bench_shapes_world.py
	$(PY) benchmarks/bench_lm_ladder.py
	$(PY) benchmarks/bench_memory_preflight.py
	$(PY) benchmarks/bench_eval.py
	$(PY) benchmarks/bench_llava_data.py
	$(PY) benchmarks/bench_mfu.py

clean:
	rm -rf $(VENV) runs .pytest_cache
