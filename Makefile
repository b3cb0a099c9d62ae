# The two commands of the README: `make demo` and `make test`. Each sets up what it needs first.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed-stamp
# requirements/constraints.txt pins everything installed (the lock); requirements/oldest.txt pins every declared
# dependency to its lower bound. Both are written from pyproject.toml by `make constraints`.
LOCK   := requirements/constraints.txt
OLDEST := requirements/oldest.txt
# --constraint pins what pip installs; --build-constraint (pip >= 25.3, hence pip first) pins setuptools and
# Cython in the isolated environment that builds the project.
pinned = --constraint $(1) --build-constraint $(1)
OLDEST_VENV  := .venv-oldest
OLDEST_STAMP := $(OLDEST_VENV)/.installed-stamp
OLDEST_SRC   := build/oldest-src
SOURCES      := pyproject.toml setup.py README.md $(shell find relay -name '*.py' -o -name '*.pyx' -o -name '*.pyi')

.PHONY: demo test lint typecheck unit unit-oldest fuzz peers bench constraints clean

demo: $(STAMP)
	$(PY) -m relay --demo

# The oldest-versions run goes beside the two runs of `unit` (one core each; each target's output is shown
# whole when it ends): sequential, the three would take about 13 minutes of the machine's 15.
test: $(STAMP) peers lint typecheck
	$(MAKE) --no-print-directory -j2 --output-sync=target unit unit-oldest
	$(MAKE) --no-print-directory fuzz

$(STAMP): pyproject.toml setup.py relay/_engine.pyx $(LOCK)
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --constraint $(LOCK) pip setuptools
	$(PY) -m pip install --quiet $(call pinned,$(LOCK)) -e '.[dev]'
	touch $@

# Not editable, and built from a copy of the sources: the oldest setuptools and Cython build their own
# engine, sharing neither the C file Cython writes beside the .pyx nor the engine built in place for $(VENV).
$(OLDEST_STAMP): $(SOURCES) $(OLDEST) $(LOCK)
	rm -rf $(OLDEST_VENV) $(OLDEST_SRC)
	mkdir -p $(OLDEST_SRC)
	tar -c $(SOURCES) | tar -x -C $(OLDEST_SRC)
	$(PYTHON) -m venv $(OLDEST_VENV)
	$(OLDEST_VENV)/bin/python -m pip install --quiet --constraint $(LOCK) pip
	$(OLDEST_VENV)/bin/python -m pip install --quiet $(call pinned,$(OLDEST)) setuptools '$(OLDEST_SRC)[dev]'
	touch $@

peers:
	scripts/fetch-peers

lint: $(STAMP)
	$(PY) -m ruff check .
	$(PY) -m ruff format --check .

typecheck: $(STAMP)
	$(PY) -m mypy

# The whole suite twice: on the default (compiled) engine with coverage of relay/ (fail_under in
# pyproject.toml), then on the Python reference alone. RELAY_PINS: the file the environment must match.
unit: $(STAMP)
	PATH="$(CURDIR)/.peers/bin:$$PATH" RELAY_PINS=$(LOCK) $(PY) -m pytest --cov
	PATH="$(CURDIR)/.peers/bin:$$PATH" RELAY_NO_EXTENSIONS=1 $(PY) -m pytest -q

# The suite once more on the oldest allowed versions (compiled engine), importing the relay installed in
# $(OLDEST_VENV): PYTHONSAFEPATH keeps the checkout off the front of sys.path, in the relays the tests start
# too, and --import-mode=append puts it after site-packages (for `tests`). Left out: the Dockerfile's install,
# which installs from the lock whichever environment runs it.
unit-oldest: $(OLDEST_STAMP) peers
	PATH="$(CURDIR)/.peers/bin:$$PATH" PYTHONSAFEPATH=1 RELAY_PINS=$(OLDEST) $(OLDEST_VENV)/bin/python -m pytest -q \
	    --import-mode=append \
	    --deselect tests/test_deploy.py::test_the_dockerfile_install_steps_build_and_load_the_native_engine

# Differential fuzzing of the two line engines, bounded (FUZZ_SECONDS, default 60); see fuzz/README.md.
fuzz: $(STAMP)
	PY=$(PY) fuzz/run

bench: $(STAMP) peers
	PATH="$(CURDIR)/.peers/bin:$$PATH" $(PY) -m bench

# Both pin files anew from pyproject.toml: the lower bounds, and the newest versions it allows (a scratch venv).
constraints:
	$(PYTHON) requirements/pins.py oldest lock

clean:
	rm -rf $(VENV) $(OLDEST_VENV) .peers .mypy_cache .ruff_cache .pytest_cache build relay/_engine.c relay/*.so
