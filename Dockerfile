# One image for the API (`run.sh api`), the worker (`run.sh worker`, the
# default) and `python3 submit_tasks.py` run from a throwaway pod.
#
#   docker build -t workqueue:0.2.0 .
#
# Needs BuildKit (Docker 23+ uses it by default) or podman/buildah for
# `RUN --mount`. Run it with a writable volume at /tmp (RUNTIME_DIR); the
# root filesystem can be read-only.
#
# BASE_IMAGE: the official Python image, pinned to a patch release (3.11.17
# on Debian bookworm). Add a digest where your policy asks for one:
# `docker.io/library/python:3.11.17-slim-bookworm@sha256:<digest>`. Any
# Debian-like image with python3 (>= 3.11) and its venv module works: the
# tests here build on a debootstrapped Debian bookworm, whose python is in
# /usr/bin rather than /usr/local/bin, so nothing below names python's path.
ARG BASE_IMAGE=docker.io/library/python:3.11.17-slim-bookworm

# The exact pins of pyproject.toml's [project] dependencies, alone: editing
# any other part of pyproject.toml leaves this file, and so the dependency
# layer below, unchanged. EXTRAS adds optional groups: the load-test image is
# `docker build --build-arg EXTRAS=loadtest -t workqueue-loadtest:0.2.0 .`
FROM ${BASE_IMAGE} AS requirements
ARG EXTRAS=""
COPY pyproject.toml /src/
RUN EXTRAS="${EXTRAS}" python3 -c 'import os, tomllib; p = tomllib.load(open("/src/pyproject.toml", "rb"))["project"]; \
print("\n".join(p["dependencies"] + [d for e in os.environ["EXTRAS"].split(",") if e for d in p["optional-dependencies"][e]]))' \
        > /requirements.txt


FROM ${BASE_IMAGE} AS build

# pip reads these from the environment. PIP_INDEX_URL: point the build at a
# PyPI mirror or proxy (--build-arg PIP_INDEX_URL=...).
ARG PIP_INDEX_URL=https://pypi.org/simple
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DEFAULT_TIMEOUT=120

# A venv: PEP 668 forbids pip in a distribution's Python, and Debian's
# python3 has no pip until a venv is made.
RUN python3 -m venv /opt/venv

# Dependencies in their own layer, rebuilt only when the pins change.
# The optional secret `pip_cert` is a CA bundle for a TLS-intercepting proxy
# (`--secret id=pip_cert,src=/etc/ssl/certs/ca-certificates.crt`); as a
# secret it is seen by this step only and stays out of every layer. pip and
# setuptools go afterwards: nothing at run time installs packages.
COPY --from=requirements /requirements.txt /tmp/requirements.txt
RUN --mount=type=secret,id=pip_cert \
    set -eu; \
    if [ -s /run/secrets/pip_cert ]; then export PIP_CERT=/run/secrets/pip_cert; fi; \
    /opt/venv/bin/python -m pip install --no-warn-script-location -r /tmp/requirements.txt; \
    /opt/venv/bin/python -m pip uninstall --yes --quiet pip setuptools

# The application itself. Everything is byte-compiled here because the root
# filesystem is read-only at run time; unchecked-hash .pyc files stay valid
# whatever the file times become when copied into the final stage.
WORKDIR /app
COPY run.sh celery_status.sh submit_tasks.py ./
COPY workqueue/ workqueue/
COPY api/ api/
COPY worker/ worker/
COPY cli/ cli/
COPY loadtest/ loadtest/
RUN python3 -m compileall -q -f --invalidation-mode unchecked-hash \
        /app/workqueue /app/api /app/worker /app/cli /app/loadtest /opt/venv


FROM ${BASE_IMAGE}

# A fixed non-root UID/GID, so Kubernetes' runAsUser/runAsNonRoot/fsGroup
# can name it. No home directory: nothing should write outside /tmp.
RUN groupadd --gid 10001 workqueue \
 && useradd --uid 10001 --gid 10001 --no-create-home \
        --home-dir /nonexistent --shell /usr/sbin/nologin workqueue

COPY --from=build /opt/venv /opt/venv
COPY --from=build /app /app

# The venv first, then /app: `celery_status.sh --live` (the exec probe) and
# `python3 submit_tasks.py` work from the working directory, as in the book.
# PATH is spelt out because a base made with `podman import` sets none.
# RUNTIME_DIR (probe files, gunicorn and prometheus scratch files; default
# under /tmp, see workqueue/settings.py) is the one path written at run time:
# mount a writable volume at /tmp (an emptyDir).
ENV PATH=/opt/venv/bin:/app:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
    PYTHONPATH=/app \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1

WORKDIR /app
USER 10001:10001

# 8000: the API (PORT); 9808: worker metrics (WORKER_METRICS_PORT).
EXPOSE 8000 9808

# Exec form: run.sh is PID 1 and exec's Celery or gunicorn, which then
# receive SIGTERM directly and shut down gracefully.
ENTRYPOINT ["/app/run.sh"]
CMD ["worker"]

# Metadata last: a new REVISION changes no layer above.
ARG BASE_IMAGE
# VERSION follows pyproject.toml (scripts/podman-env.sh passes it from there).
ARG VERSION=0.2.0
ARG REVISION=""
LABEL org.opencontainers.image.title="workqueue" \
      org.opencontainers.image.description="Flask API, Celery worker and submit_tasks.py: HTTP -> RabbitMQ -> Celery -> Redis" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.revision="${REVISION}" \
      org.opencontainers.image.base.name="${BASE_IMAGE}"
