# syntax=docker/dockerfile:1
# Two images. The default (last) stage: a stateless serving container for one visionops bundle,
# ONNX Runtime + FastAPI, no PyTorch.
#
#   visionops export runs/run-001                 # make the bundle first
#   docker build --build-arg BUNDLE=runs/run-001/bundle -t visionops-serve .
#   docker run --rm -p 8000:8000 -v "$PWD/predictions:/predictions" visionops-serve
#
# Settings come from flags appended to `docker run ... visionops-serve --workers 2`, or from
# VISIONOPS_API_KEY. Mount /predictions to keep the prediction log for `visionops drift`, or
# append `--log-dir s3://bucket/predictions` (gs://... too) so every replica uploads its log
# there. It listens on $PORT when set (Cloud Run sets it), else 8000.
# `visionops deploy k8s|cloudrun RUN` writes the manifests (docs/serving-at-scale.md).
#
# The `train` stage: torch and every training dependency at requirements.lock's versions, for
# Vertex AI custom jobs, SLURM (through a container runtime) and Kubernetes PyTorchJobs. Its
# entrypoint runs `dvc pull` when the project it is given has a DVC remote, then
# `visionops train "$@"` (docs/training-at-scale.md):
#
#   docker build --target train -t visionops-train .
#   docker run --rm -v "$PWD:/project" visionops-train --nnodes 2 --node-rank 0 \
#       --rdzv-endpoint 10.0.0.1:29500

FROM python:3.11-slim AS wheel
WORKDIR /src
COPY pyproject.toml README.md ./
COPY src ./src
RUN pip wheel --no-cache-dir --no-deps --wheel-dir /wheels .

FROM python:3.11-slim AS train
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    MPLBACKEND=Agg
COPY requirements.lock /tmp/requirements.lock
COPY --from=wheel /wheels /wheels
# visionops with its dependencies (torch, torchvision, wandb...) and DVC, every version pinned
# by the lock (used as constraints).
RUN pip install --no-cache-dir -c /tmp/requirements.lock /wheels/*.whl "dvc[gs]" \
    && rm -rf /wheels /tmp/requirements.lock \
    && useradd --create-home --uid 10001 visionops \
    && mkdir /project && chown visionops /project
COPY --chmod=755 docker/train-entrypoint.sh /usr/local/bin/visionops-train
USER 10001
WORKDIR /project
# The rendezvous port of node 0 (--rdzv-endpoint HOST:29500).
EXPOSE 29500
ENTRYPOINT ["visionops-train"]
CMD []

FROM python:3.11-slim AS serve
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1
# Only what serving imports, at the versions of requirements.lock (used as constraints), then
# visionops itself without its training dependencies: torch never enters the image.
# LOG_DRIVERS: the fsspec drivers of `--log-dir s3://...` / `gs://...` (empty: local logs only).
ARG LOG_DRIVERS="fsspec s3fs gcsfs"
COPY requirements.lock /tmp/requirements.lock
# hadolint ignore=SC2086
RUN pip install --no-cache-dir -c /tmp/requirements.lock \
        onnxruntime fastapi uvicorn httptools uvloop python-multipart prometheus-client pillow \
        numpy pydantic pyyaml loguru typer rich $LOG_DRIVERS \
    && rm /tmp/requirements.lock
COPY --from=wheel /wheels /wheels
RUN pip install --no-cache-dir --no-deps /wheels/*.whl && rm -rf /wheels \
    && useradd --create-home --uid 10001 visionops \
    && mkdir /predictions && chown visionops /predictions

ARG BUNDLE=runs/latest/bundle
# Owned by the serving user: export writes its files with mode 0600.
COPY --chown=10001:10001 ${BUNDLE} /bundle
USER 10001
EXPOSE 8000
# Orchestrators should probe /health (liveness) and /ready (model loaded and warmed up).
HEALTHCHECK --interval=10s --timeout=3s --start-period=30s --retries=3 \
    CMD ["python", "-c", "import os, sys, urllib.request; sys.exit(urllib.request.urlopen('http://127.0.0.1:%s/ready' % os.environ.get('PORT', '8000'), timeout=2).status != 200)"]
# SIGTERM (docker stop) drains in-flight requests and flushes the prediction log.
STOPSIGNAL SIGTERM
# exec: the server is PID 1 and gets the SIGTERM itself. Arguments after the image name
# follow (a later --log-dir replaces /predictions).
ENTRYPOINT ["/bin/sh", "-c", "exec visionops serve /bundle --host 0.0.0.0 --port \"${PORT:-8000}\" --log-dir /predictions \"$@\"", "visionops-serve"]
CMD []
