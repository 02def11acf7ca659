# The front door. `make run` and `make test` work on a fresh machine:
# they create .venv, install core + both plugins + dev tools (the test run itself
# pip-installs tests/example_provider, a third-party-style plugin, into a temp site dir).
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: install run test lint typecheck bench clean

$(STAMP): pyproject.toml plugins/mdgate-yahoo/pyproject.toml plugins/mdgate-dhan/pyproject.toml
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e '.[dev]' -e plugins/mdgate-yahoo -e plugins/mdgate-dhan
	touch $(STAMP)

install: $(STAMP)  ## create .venv with everything

run: $(STAMP)  ## run the gateway on embedded defaults (memory store, built-in routes)
	$(BIN)/mdgate run

test: $(STAMP)  ## the whole test suite (starts its own redis-server / PostgreSQL)
	$(BIN)/pytest

lint: $(STAMP)
	$(BIN)/ruff check src plugins tests benchmarks noxfile.py

typecheck: $(STAMP)
	$(BIN)/mypy src/mdgate plugins/mdgate-yahoo/src plugins/mdgate-dhan/src

bench: $(STAMP)
	$(BIN)/nox -s bench

clean:
	rm -rf $(VENV) .nox .pytest_cache .mypy_cache .ruff_cache
