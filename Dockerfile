# syntax=docker/dockerfile:1.7
# polyclip service image. Targets:
#   docker build -t polyclip .                 CPU (default, last stage), python:3.11-slim
#   docker build -t polyclip:gpu --target gpu .  CUDA runtime + onnxruntime-gpu
# Models live in /models: fill deploy/bake/ as deploy/docker/models.yaml says, then bake it in
# (the default, MODELS_SRC=deploy/bake) or mount it: docker run -v "$PWD/deploy/bake:/models:ro".
# The config is mounted at /config/models.yaml:
#   docker run -p 8000:8000 -v "$PWD/deploy/docker/models.yaml:/config/models.yaml:ro" polyclip

ARG PYTHON_IMAGE=python:3.11-slim-bookworm
ARG CUDA_IMAGE=nvidia/cuda:12.6.3-cudnn-runtime-ubuntu22.04
# The CPU wheel of torch: the default PyPI torch pulls ~2 GB of CUDA libraries we do not use.
ARG TORCH_VERSION=2.13.0
ARG TORCH_INDEX=https://download.pytorch.org/whl/cpu
ARG MODELS_SRC=deploy/bake

# ---- the package sources, once for both builds ---------------------------------------------
FROM scratch AS src
COPY pyproject.toml README.md /src/
COPY polyclip/ /src/polyclip/
COPY encoders/ /src/encoders/
COPY training/ /src/training/
COPY export/ /src/export/
COPY service/ /src/service/
COPY bench/ /src/bench/

# ---- CPU build: a self-contained venv in /opt/venv -----------------------------------------
FROM ${PYTHON_IMAGE} AS build-cpu
ARG TORCH_VERSION
ARG TORCH_INDEX
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1 PATH=/opt/venv/bin:$PATH
# torch first, from its CPU index; the project's own range is then already satisfied.
RUN python -m venv /opt/venv \
    && pip install --index-url "${TORCH_INDEX}" "torch==${TORCH_VERSION}"
COPY --from=src /src /src
RUN pip install /src

# ---- GPU build: same venv on the CUDA base, onnxruntime swapped for onnxruntime-gpu ---------
FROM ${CUDA_IMAGE} AS build-gpu
ARG TORCH_VERSION
ARG TORCH_INDEX
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1 PATH=/opt/venv/bin:$PATH \
    DEBIAN_FRONTEND=noninteractive
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends python3.11 python3.11-venv \
    && rm -rf /var/lib/apt/lists/* \
    && python3.11 -m venv /opt/venv \
    && pip install --index-url "${TORCH_INDEX}" "torch==${TORCH_VERSION}"
COPY --from=src /src /src
RUN pip install /src \
    && pip uninstall -y onnxruntime \
    && pip install "onnxruntime-gpu>=1.20"

# ---- GPU runtime ----------------------------------------------------------------------------
FROM ${CUDA_IMAGE} AS gpu
ARG MODELS_SRC
ENV DEBIAN_FRONTEND=noninteractive PATH=/opt/venv/bin:$PATH PYTHONUNBUFFERED=1 \
    POLYCLIP_DATA_DIR=/data
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends python3.11 libgomp1 \
    && rm -rf /var/lib/apt/lists/* \
    && useradd --system --uid 10001 --create-home --shell /usr/sbin/nologin polyclip \
    && mkdir -p /data /config \
    && chown polyclip /data
COPY --from=build-gpu /opt/venv /opt/venv
COPY --chown=root:root ${MODELS_SRC} /models/
USER 10001
WORKDIR /home/polyclip
EXPOSE 8000
HEALTHCHECK --interval=15s --timeout=5s --start-period=180s --retries=3 \
    CMD ["python", "-c", "import urllib.request as u; u.urlopen('http://127.0.0.1:8000/ready', timeout=4)"]
ENTRYPOINT ["polyclip", "serve"]
CMD ["--config", "/config/models.yaml", "--host", "0.0.0.0", "--port", "8000"]

# ---- CPU runtime (default target) -----------------------------------------------------------
FROM ${PYTHON_IMAGE} AS cpu
ARG MODELS_SRC
ENV PATH=/opt/venv/bin:$PATH PYTHONUNBUFFERED=1 POLYCLIP_DATA_DIR=/data
# libgomp1: the OpenMP runtime onnxruntime's CPU kernels load.
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends libgomp1 \
    && rm -rf /var/lib/apt/lists/* \
    && useradd --system --uid 10001 --create-home --shell /usr/sbin/nologin polyclip \
    && mkdir -p /data /config \
    && chown polyclip /data
COPY --from=build-cpu /opt/venv /opt/venv
COPY --chown=root:root ${MODELS_SRC} /models/
USER 10001
WORKDIR /home/polyclip
EXPOSE 8000
# urlopen raises on a 503 from /ready, so the exit status is the readiness: no curl needed.
HEALTHCHECK --interval=15s --timeout=5s --start-period=180s --retries=3 \
    CMD ["python", "-c", "import urllib.request as u; u.urlopen('http://127.0.0.1:8000/ready', timeout=4)"]
ENTRYPOINT ["polyclip", "serve"]
CMD ["--config", "/config/models.yaml", "--host", "0.0.0.0", "--port", "8000"]
