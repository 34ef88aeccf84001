# langadapt developer entry points. `make setup` is idempotent: it reinstalls only when pyproject.toml changes.
VENV ?= .venv
PYTHON ?= python3
BIN := $(VENV)/bin
STAMP := $(VENV)/.langadapt-installed
HOST ?= 127.0.0.1
PORT ?= 8000

.PHONY: setup serve test test-fast style quality bench clean

setup: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check --upgrade pip
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -e '.[dev]'
	touch $(STAMP)

serve: setup
	$(BIN)/langadapt serve --host $(HOST) --port $(PORT)

test: setup
	$(BIN)/ruff check src tests bench
	$(BIN)/ruff format --check src tests bench
	$(BIN)/python -m pytest

test-fast: setup
	$(BIN)/python -m pytest -m "not slow"

style: setup
	$(BIN)/ruff check --fix src tests bench
	$(BIN)/ruff format src tests bench

quality: setup
	$(BIN)/ruff check src tests bench
	$(BIN)/ruff format --check src tests bench
	$(BIN)/mypy src

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache .mypy_cache
