# The two commands of the README: `make demo` and `make test`. Each sets up what it needs first.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed-stamp

.PHONY: demo test lint typecheck unit fuzz peers bench clean

demo: $(STAMP)
	$(PY) -m relay --demo

test: $(STAMP) peers lint typecheck unit fuzz

$(STAMP): pyproject.toml setup.py relay/_engine.pyx
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[dev]'
	touch $@

peers:
	scripts/fetch-peers

lint: $(STAMP)
	$(PY) -m ruff check .
	$(PY) -m ruff format --check .

typecheck: $(STAMP)
	$(PY) -m mypy

# The whole suite twice: on the default (compiled) engine, then on the Python reference alone.
unit: $(STAMP)
	PATH="$(CURDIR)/.peers/bin:$$PATH" $(PY) -m pytest
	PATH="$(CURDIR)/.peers/bin:$$PATH" RELAY_NO_EXTENSIONS=1 $(PY) -m pytest -q

# Differential fuzzing of the two line engines, bounded (FUZZ_SECONDS, default 60); see fuzz/README.md.
fuzz: $(STAMP)
	PY=$(PY) fuzz/run

bench: $(STAMP) peers
	PATH="$(CURDIR)/.peers/bin:$$PATH" $(PY) -m bench

clean:
	rm -rf $(VENV) .peers .mypy_cache .ruff_cache .pytest_cache build relay/_engine.c relay/*.so
