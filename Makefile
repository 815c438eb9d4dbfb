# Two commands matter: `make book` (build the report, executing every notebook on the tiny lab pair)
# and `make test` (the whole test suite, notebooks at smoke scale included). Both create or reuse .venv.
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
# CPU wheel: on this project's machines pip finds torch 2.13.0+cpu on local disk. Elsewhere, set
# TORCH_PIP_ARGS="--index-url <PyTorch's CPU wheel index>" to avoid a multi-GB CUDA build.
TORCH_SPEC ?= torch==2.13.0
TORCH_PIP_ARGS ?=
export TIEDLIB_CACHE ?= $(CURDIR)/.cache/tiedlib
export HF_HUB_OFFLINE ?= 1
export TOKENIZERS_PARALLELISM ?= false
export PYDEVD_DISABLE_FILE_VALIDATION ?= 1

.PHONY: test book bench lint lab clean-book help vendor check-book
help:
	@echo "make book   build the Jupyter Book (_build/html), executing every notebook on the tiny lab pair"
	@echo "make test   run the test suite (notebooks executed at smoke scale, smoke book build)"
	@echo "make bench  print the benchmark figures"
	@echo "make lab    prebuild the tiny lab model pair"

$(VENV)/.installed: requirements.txt requirements-dev.txt
	@set -e; \
	torch_action=$$(./scripts/make_venv.sh "$(PYTHON)" "$(VENV)"); \
	if [ "$$torch_action" = keep ]; then \
	  echo "[setup] keeping the torch of $(PYTHON) (venv with --system-site-packages)"; \
	else \
	  echo "[setup] installing $(TORCH_SPEC) (CPU) before anything that depends on torch"; \
	  $(PY) -m pip install -q $(TORCH_PIP_ARGS) "$(TORCH_SPEC)"; \
	fi; \
	$(PY) -m pip install -q -r requirements-dev.txt; \
	$(PY) -c "import site, pathlib; pathlib.Path(site.getsitepackages()[0], 'tiedlib-dev.pth').write_text('$(CURDIR)\n')"; \
	$(PY) -c "import torch, tiedlib; print('[setup] torch', torch.__version__, 'cuda' if torch.cuda.is_available() else 'cpu')"; \
	touch $@

vendor:
	./scripts/vendor_assets.sh

test: $(VENV)/.installed vendor
	$(VENV)/bin/ruff check tiedlib tests benchmarks scripts
	$(PY) -m pytest -q

book: $(VENV)/.installed vendor
	$(PY) -m tiedlib.lab build --config tiny
	$(VENV)/bin/jupyter-book build . -W -n --keep-going
# The README's findings block must match the numbers this build glued (rewrite it: python scripts/findings.py).
	$(PY) scripts/findings.py --check
	@if command -v chromium >/dev/null 2>&1; then $(PY) scripts/check_book.py _build/html; \
	else echo "chromium not installed: skipping the browser check (apt-get install chromium; make check-book)"; fi

# Open every page of the built book in headless Chromium (needs Debian's chromium package).
check-book:
	$(PY) scripts/check_book.py _build/html

bench: $(VENV)/.installed
	@cuda=1; $(PY) -c "import torch; raise SystemExit(not torch.cuda.is_available())" || cuda=0; \
	for b in benchmarks/bench_*.py; do \
		if [ "$$b" = benchmarks/bench_gpu.py ] && [ $$cuda = 0 ]; then \
			echo "skipping $$b: torch sees no CUDA device"; continue; fi; \
		$(PY) $$b || exit 1; \
	done

lab: $(VENV)/.installed
	$(PY) -m tiedlib.lab build --config tiny

lint: $(VENV)/.installed
	$(VENV)/bin/ruff check tiedlib tests benchmarks scripts

clean-book:
	rm -rf _build
