# syntax=docker/dockerfile:1
# The unlearning service: API (with its embedded worker by default) or `unlearn worker`.
#
#   CPU image (default):  docker build -t unlearn:cpu .
#   CUDA image:           docker build --build-arg TORCH_VARIANT=cu124 -t unlearn:cuda .
#                         docker run --gpus all -e UNLEARN_DEVICE=cuda unlearn:cuda
#
# TORCH_VARIANT picks the PyTorch wheel index (https://download.pytorch.org/whl/<variant>):
# `cpu` installs the CPU-only wheels (no CUDA libraries, a far smaller image); a CUDA
# variant (cu118, cu121, cu124, ...) installs wheels that bundle the CUDA runtime, so the
# same slim base image runs on any host with an NVIDIA driver and the container toolkit.
ARG PYTHON_IMAGE=python:3.11-slim

# --- build: a virtual environment with the dependencies, then the service ------------
FROM ${PYTHON_IMAGE} AS build
ARG TORCH_VARIANT=cpu
ARG TORCH_INDEX_URL=https://download.pytorch.org/whl/${TORCH_VARIANT}
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1 PATH=/opt/venv/bin:$PATH
RUN python -m venv /opt/venv
WORKDIR /build

# Dependencies first, from pyproject.toml alone: this layer is rebuilt only when the
# dependencies change, not on every code change. torch/torchvision come from the PyTorch
# index of the chosen variant; the rest from PyPI (torch is then already satisfied).
COPY pyproject.toml ./
RUN python -c "import tomllib; print('\n'.join(tomllib.load(open('pyproject.toml', 'rb'))['project']['dependencies']))" > requirements.txt \
    && grep -E '^(torch|torchvision)([<>=! ]|$)' requirements.txt > torch-requirements.txt \
    && pip install --index-url ${TORCH_INDEX_URL} -r torch-requirements.txt \
    && pip install -r requirements.txt

# Then the code (no dependency resolution: everything is installed above).
COPY README.md alembic.ini ./
COPY app ./app
COPY migrations ./migrations
RUN pip install --no-deps .

# --- runtime: the virtual environment and the shipped base model, as a non-root user ---
FROM ${PYTHON_IMAGE} AS runtime
ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 PATH=/opt/venv/bin:$PATH \
    UNLEARN_DATABASE_URL=sqlite:////srv/var/unlearn.db \
    UNLEARN_ARTIFACT_DIR=/srv/models \
    UNLEARN_BASE_MODEL_PATH=/srv/models/base/mnist-cnn-base.safetensors \
    UNLEARN_DATA_DIR=/srv/data \
    UNLEARN_CACHE_DIR=/srv/var/cache \
    UNLEARN_SIGNING_KEY_PATH=/srv/var/signing-key.pem \
    UNLEARN_WEBHOOK_SECRET_PATH=/srv/var/webhook-secret \
    UNLEARN_LOG_FORMAT=json

RUN groupadd --system --gid 10001 unlearn \
    && useradd --system --uid 10001 --gid unlearn --home-dir /srv --shell /usr/sbin/nologin unlearn \
    && mkdir -p /srv/var /srv/models /srv/data /srv/artifacts /srv/cache /srv/datasets \
       /srv/keys /srv/checkpoints \
    && chown -R unlearn:unlearn /srv
COPY --from=build /opt/venv /opt/venv
COPY --chown=unlearn:unlearn models/base /srv/models/base
WORKDIR /srv
USER unlearn:unlearn

EXPOSE 8000
# Liveness: the process answers HTTP (python is in the image; curl is not).
HEALTHCHECK --interval=15s --timeout=5s --start-period=60s --retries=3 \
    CMD ["python", "-c", "import sys, urllib.request; sys.exit(0 if urllib.request.urlopen('http://127.0.0.1:8000/healthz', timeout=4).status == 200 else 1)"]
CMD ["sh", "-c", "unlearn db upgrade && unlearn bootstrap && unlearn serve --host 0.0.0.0 --port 8000"]
