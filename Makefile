# The front door. `make demo`, `make run` and `make test` work on a fresh machine:
# they create .venv; demo and run install the runtime only (core + both plugins),
# test and install add the dev tools (the test run itself pip-installs
# tests/example_provider, a third-party-style plugin, into a temp site dir).
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
RUNTIME := $(VENV)/.runtime
DEPS := pyproject.toml plugins/mdgate-yahoo/pyproject.toml plugins/mdgate-dhan/pyproject.toml

.PHONY: install demo run test lint typecheck bench clean

$(RUNTIME): $(DEPS)
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e . -e plugins/mdgate-yahoo -e plugins/mdgate-dhan
	touch $(RUNTIME)

$(STAMP): $(DEPS)
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e '.[dev]' -e plugins/mdgate-yahoo -e plugins/mdgate-dhan
	touch $(STAMP) $(RUNTIME)

install: $(STAMP)  ## create .venv with everything

demo: $(RUNTIME)  ## the gateway fed by a bundled recording, on loop: ticks in seconds, no network
	$(BIN)/mdgate demo

run: $(RUNTIME)  ## run the gateway on embedded defaults (memory store, built-in routes)
	$(BIN)/mdgate run

test:  ## the whole test suite (installs the Debian packages it needs; starts its own redis-server / PostgreSQL)
	scripts/system-deps
	$(MAKE) --no-print-directory $(STAMP)
	$(BIN)/pytest

lint: $(STAMP)
	$(BIN)/ruff check src plugins tests benchmarks noxfile.py

typecheck: $(STAMP)
	$(BIN)/mypy src/mdgate plugins/mdgate-yahoo/src plugins/mdgate-dhan/src

bench: $(STAMP)
	$(BIN)/nox -s bench

clean:
	rm -rf $(VENV) .nox .pytest_cache .mypy_cache .ruff_cache
