# Two commands do all the set-up on a fresh machine: `make book` and `make test`.
# Both create .venv (the pinned torch/torchvision pair first, so nothing pulls another build), then install lungseg,
# then try the CRF extra (`make crf`), which needs a C++ compiler and may fail without stopping the build.
# The CPU build comes from the PyTorch CPU index (scripts/install_torch.py; where that index cannot be
# reached, the same pins come from PyPI or the machine's local wheels). `make venv GPU=1` installs the
# CUDA build from PyPI instead. The pair is also pinned in environment.yml (tests/test_install.py).
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
TORCH_PINS := torch==2.14.1 torchvision==0.29.1
GPU ?=
PROFILE ?= medium
DEVICE ?= auto
export MPLBACKEND := Agg
export PYTHONHASHSEED := 0

.PHONY: venv crf lint test test-unit test-notebooks test-published book notebooks check-book sync bench experiment test-study real-grid real-model clean

venv: $(STAMP)

$(STAMP): pyproject.toml Makefile
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python scripts/install_torch.py $(if $(GPU),--gpu) $(TORCH_PINS)
	$(BIN)/python -m pip install --quiet -e ".[test,book,bench]"
	$(MAKE) --no-print-directory crf
	touch $(STAMP)

# The dense CRF of eq. (10), pydensecrf2, is published as source only: it builds with a C++ compiler and
# the Python headers. Without them lungseg works, and the book and the tests say the CRF was skipped.
crf:
	@$(BIN)/python -m pip install --quiet -e ".[crf]" || { \
		echo "make: pydensecrf2 (the dense CRF of eq. 10) was NOT installed: it is published as source only and"; \
		echo "      needs a C++ compiler and the Python headers (e.g. apt-get install g++ python3-dev; then make crf)."; \
		echo "      Everything else works; the chapters and tests that need the CRF are skipped and say why."; }

# Unit tests, then the notebooks as their users run them: papermill executes every chapter with the quick
# profile (training from scratch) into _build/ci-notebooks, and nbval re-executes those and checks the
# marked outputs. Last, the published book proves itself (test-published).
CI_NOTEBOOKS := _build/ci-notebooks
# The unit tests run on two workers (pytest-xdist) with one thread each: most are short torch runs
# and `lungseg` subprocesses, which two cores finish side by side sooner than one after the other
# (two workers that each start two threads on two cores would be many times slower).
UNIT_TESTS := OMP_NUM_THREADS=1 MKL_NUM_THREADS=1 $(BIN)/python -m pytest -q -n 2 --timeout=1200 --durations=15 tests
test: venv lint
	$(UNIT_TESTS)
	rm -rf $(CI_NOTEBOOKS)
	$(BIN)/python scripts/run_notebooks.py --profile quick --out $(CI_NOTEBOOKS)
	$(BIN)/python -m pytest -q --timeout=1200 --nbval-lax $(CI_NOTEBOOKS)
	$(MAKE) --no-print-directory test-published

# The code's style, checked rather than policed (pyproject.toml [tool.ruff]).
lint: venv
	$(BIN)/ruff check lungseg tests scripts benchmarks

# nbval re-executes the committed chapters notebooks/NN_*.ipynb (the medium profile, read from
# results/medium without training) and compares every output of every cell with the committed one,
# masking only the times, dates, versions and paths listed in $(NBVAL_SANITIZE) (book/reproducibility.md).
# Without MPLBACKEND, as scripts/run_notebooks.py executes them, so the figures are drawn inline.
NBVAL_SANITIZE := notebooks/nbval_sanitize.cfg
PUBLISHED_NOTEBOOKS := $(sort $(wildcard notebooks/[0-9][0-9]_*.ipynb))
test-published: venv
	env -u MPLBACKEND $(BIN)/python -m pytest -q --timeout=1200 --nbval --nbval-current-env \
		--nbval-sanitize-with $(NBVAL_SANITIZE) $(PUBLISHED_NOTEBOOKS)

test-notebooks: venv
	rm -rf $(CI_NOTEBOOKS)
	$(BIN)/python scripts/run_notebooks.py --profile quick --out $(CI_NOTEBOOKS)
	$(BIN)/python -m pytest -q --timeout=1200 --nbval-lax $(CI_NOTEBOOKS)

test-unit: venv
	$(UNIT_TESTS)


# Speed and memory side by side with MONAI (results/bench/); `make bench QUICK=1` for a smoke run,
# `make bench COMPILE=1` adds the torch.compile variants (on CUDA they are on by default).
bench: venv
	$(BIN)/lungseg bench $(if $(QUICK),--quick) $(if $(COMPILE),--compile) --device $(DEVICE)

# The book: execute notebooks/NN_*.md in order (papermill, profile $(PROFILE)), then build the HTML.
notebooks: venv
	$(BIN)/python scripts/run_notebooks.py --profile $(PROFILE) $(if $(filter-out auto,$(DEVICE)),-p device $(DEVICE))

book: venv notebooks
	$(BIN)/jupyter-book build --all .
	@echo "book: _build/html/index.html"

# Read the built book as a reader would: headless Chromium loads every page, image and internal link.
check-book: book
	command -v chromium >/dev/null && command -v chromedriver >/dev/null || \
		(apt-get update && apt-get install -y chromium chromium-driver)
	$(BIN)/python -c "import selenium" 2>/dev/null || $(BIN)/python -m pip install --quiet selenium
	$(BIN)/python scripts/check_book.py _build/html

# Bring the paired notebooks (.md sources and .ipynb) in step after editing either, and write every
# chapter's Colab install cell from _config.yml's repository.url (scripts/colab_cells.py).
sync: venv
	$(BIN)/jupytext --sync notebooks/*.md
	$(BIN)/python scripts/colab_cells.py --write

# The comparison grid of a profile (medium: tuning + grid, about an hour of CPU; paper: a GPU), published to
# results/$(PROFILE)/.
# THREADS=1 on a shared CPU (competing thread pools are far slower); empty = torch's default.
THREADS ?=
experiment: venv
	$(BIN)/python scripts/run_profile.py --profile $(PROFILE) --device $(DEVICE) $(if $(THREADS),--threads $(THREADS))

# The published grid scored on its profile's large independent test study (results/<profile>/test-study).
test-study: venv
	$(BIN)/python scripts/run_test_study.py --profile $(PROFILE)

# The paper's comparison on real CT: patient-level CV on the shared real MSD patches (results/real-patches/grid).
real-grid: venv
	$(BIN)/python scripts/run_real_grid.py

# The published real-CT model: the training defaults on all 13 real MSD patients (results/real-ct).
real-model: venv
	$(BIN)/python scripts/train_real_model.py

clean:
	rm -rf _build .pytest_cache
