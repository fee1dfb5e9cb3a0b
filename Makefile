# Two commands do all the set-up on a fresh machine: `make book` and `make test`.
# Both create .venv (CPU torch 2.13.0 first, so nothing pulls a CUDA build), then install lungseg.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
PROFILE ?= quick
DEVICE ?= auto
export MPLBACKEND := Agg
export PYTHONHASHSEED := 0

.PHONY: venv test test-unit test-notebooks book notebooks check-book bench clean

venv: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet torch==2.13.0
	$(BIN)/python -m pip install --quiet -e ".[test,book,bench]"
	touch $(STAMP)

test: venv
	$(BIN)/python -m pytest -q tests --timeout=900

clean:
	rm -rf _build .pytest_cache
