# langadapt developer entry points. `make setup` is idempotent: it reinstalls only when pyproject.toml changes.
VENV ?= .venv
PYTHON ?= python3
BIN := $(VENV)/bin
STAMP := $(VENV)/.langadapt-installed
HOST ?= 127.0.0.1
PORT ?= 8000
# `make image`: the CPU image with docker (where its engine answers) or podman, in docker format (OCI has no
# HEALTHCHECK). IMAGE_BUILD_FLAGS: e.g. `--isolation chroot` (podman where containers cannot start) or
# `--build-context wheels=DIR` (local wheels; see the Dockerfile's header).
CONTAINER_ENGINE ?= $(shell docker info >/dev/null 2>&1 && echo docker || command -v podman 2>/dev/null || command -v docker 2>/dev/null)
IMAGE ?= langadapt:cpu
IMAGE_BUILD_FLAGS ?=

.PHONY: setup serve test test-fast reliability style quality bench clean image image-test

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

# The long reliability runs (docs/reliability.md): the full fuzz (20x the quick run's examples, ~8 min here), the
# fault tests, then the 10-minute soak (writes bench/results/soak.{json,png}). `make test` runs the quick fuzz.
reliability: setup
	LANGADAPT_FUZZ=full $(BIN)/python -m pytest tests/integration/test_server_fuzz.py \
		tests/integration/test_server_faults.py tests/integration/test_label_disk.py
	$(BIN)/python bench/soak.py

style: setup
	$(BIN)/ruff check --fix src tests bench
	$(BIN)/ruff format src tests bench

quality: setup
	$(BIN)/ruff check src tests bench
	$(BIN)/ruff format --check src tests bench
	$(BIN)/mypy src

image:
	@test -n "$(CONTAINER_ENGINE)" || { echo "make image: neither docker nor podman is installed" >&2; exit 1; }
	$(CONTAINER_ENGINE) build $(if $(findstring podman,$(notdir $(CONTAINER_ENGINE))),--format docker) \
		$(IMAGE_BUILD_FLAGS) -t $(IMAGE) .

# Build the CPU image with podman and run it from its mounted root file system (root; see deploy/README.md).
image-test:
	$(PYTHON) deploy/image_test.py

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache .mypy_cache
