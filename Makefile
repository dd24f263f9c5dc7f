# Two entry points: `make demo` and `make test`. Both build .venv from the project's own files.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test setup bench fuzz clean

$(STAMP): pyproject.toml
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	# torch first, pinned: takes the local CPU wheel instead of the CUDA build
	$(BIN)/pip install -q torch==2.13.0
	$(BIN)/pip install -q -e '.[test,ray]'
	touch $(STAMP)

setup: $(STAMP)

demo: $(STAMP)
	$(BIN)/bfclab demo

test: $(STAMP)
	$(BIN)/python -m pytest

bench: $(STAMP)
	$(BIN)/python bench/core_modes.py
	OMP_NUM_THREADS=1 $(BIN)/python bench/kernel_solver.py
	$(BIN)/python bench/checkpoint_overhead.py
	$(BIN)/python bench/throughput.py

# the fuzzing of the CLI and its files at 20x the test suite's examples (about 15 minutes)
fuzz: $(STAMP)
	$(BIN)/python bench/fuzz.py --profile long

clean:
	rm -rf $(VENV) runs
