# Set-up and entry points. Everything installs into .venv; torch goes in first so nothing else
# can pull a different (multi-gigabyte CUDA) build. GPU users: make demo TORCH_SPEC="torch==2.13.0" \
#   TORCH_INDEX="--index-url https://download.pytorch.org/whl/cu128"
PYTHON ?= python3
VENV ?= .venv
TORCH_SPEC ?= torch==2.13.0
TORCH_INDEX ?=
EXTRAS ?= dev,tensorboard
PIP = $(VENV)/bin/python -m pip
STAMP = $(VENV)/.lmadapt-installed

.PHONY: demo test lint bench install

$(STAMP): pyproject.toml constraints.txt
	test -x $(VENV)/bin/python || $(PYTHON) -m venv $(VENV)
	$(PIP) install --quiet --upgrade pip
	$(PIP) install --quiet $(TORCH_INDEX) "$(TORCH_SPEC)"
	grep -v '^torch==' constraints.txt > $(VENV)/constraints.txt
	echo "torch==$$($(VENV)/bin/python -c 'import torch; print(torch.__version__)')" >> $(VENV)/constraints.txt
	$(PIP) install --quiet -c $(VENV)/constraints.txt -e ".[$(EXTRAS)]"
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/lmadapt demo

test: $(STAMP)
	$(VENV)/bin/ruff check src tests benchmarks
	$(VENV)/bin/python -m pytest -n 2 --durations=15

lint: $(STAMP)
	$(VENV)/bin/ruff check src tests benchmarks
	$(VENV)/bin/ruff format --check src tests benchmarks

bench: $(STAMP)
	$(PIP) install --quiet -c $(VENV)/constraints.txt -e ".[$(EXTRAS),bench]"
	$(VENV)/bin/python benchmarks/generation.py
