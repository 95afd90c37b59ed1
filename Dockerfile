# LocalFlow image: one image for every role. The command picks it:
#   serve  - API + dashboard + worker + scheduler in one process (the default)
#   api    - HTTP API + dashboard           worker - worker pool + cron scheduler
# docker-compose.yml runs `api` and `worker` as two containers on one volume.
#
#   docker build -t localflow .
# Without network access to PyPI: run docker/wheelhouse.sh first, then
#   docker build --build-arg OFFLINE=1 -t localflow .
#
# Plain Dockerfile syntax only (no BuildKit mounts), so the classic builder used
# by docker-compose 1.29 builds it too.

ARG PYTHON_IMAGE=python:3.11-slim

# ---------------------------------------------------------------------------
# builder: install the locked dependencies and the project into /opt/venv.
# Only /opt/venv and /app leave this stage; uv and the build backend stay here.
FROM ${PYTHON_IMAGE} AS builder

ARG UV_VERSION=0.13.9
# 1: install only from docker/wheelhouse (no index). 0: use the wheelhouse when
# it has the files, PyPI otherwise.
ARG OFFLINE=0

ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_ROOT_USER_ACTION=ignore \
    UV_NO_CACHE=1 \
    UV_PYTHON_DOWNLOADS=never \
    UV_COMPILE_BYTECODE=1 \
    UV_LINK_MODE=copy

# Empty in a fresh clone (only its .gitignore); filled by docker/wheelhouse.sh.
COPY docker/wheelhouse/ /wheelhouse/

WORKDIR /app

# Dependencies first, from uv.lock alone, so editing the source does not
# reinstall them. The postgres extra (psycopg 3 and its pool) is always in: one
# image serves a SQLite file and a postgresql:// URL alike. `uv export` keeps the lock's hashes: the build installs
# exactly the files that were locked, from PyPI or from the wheelhouse.
COPY pyproject.toml uv.lock ./
RUN set -eu; \
    no_index=""; if [ "$OFFLINE" = 1 ]; then no_index="--no-index"; fi; \
    python -m pip install --quiet $no_index --find-links /wheelhouse "uv==${UV_VERSION}"; \
    uv venv --quiet /opt/venv --python /usr/local/bin/python3; \
    uv export --quiet --frozen --no-dev --extra postgres --no-emit-project \
        -o /tmp/requirements.txt; \
    uv pip install --quiet --python /opt/venv/bin/python --require-hashes \
        $no_index --find-links /wheelhouse -r /tmp/requirements.txt

# The source tree lives at /app and is installed editable: LocalFlow finds
# migrations/ beside its packages, and the `localflow` console script comes
# from pyproject.toml. Compile it now; at run time /app is read-only.
COPY README.md ./
COPY migrations/ migrations/
COPY shared/ shared/
COPY api/ api/
COPY worker/ worker/
COPY localflow/ localflow/
COPY docker/entrypoint.py docker/healthcheck.py docker/backup.py docker/
RUN set -eu; \
    no_index=""; if [ "$OFFLINE" = 1 ]; then no_index="--no-index"; fi; \
    uv pip install --quiet --python /opt/venv/bin/python --no-deps \
        $no_index --find-links /wheelhouse --editable . ; \
    python -m compileall -q --invalidation-mode checked-hash /app

# ---------------------------------------------------------------------------
# runtime: the slim base, the venv and the source; no compilers, no uv, no pip
# use. Runs as an unprivileged user that can write only /data.
FROM ${PYTHON_IMAGE} AS runtime

# A fixed uid/gid, so files on the volume keep one owner across rebuilds.
RUN groupadd --gid 10001 localflow \
    && useradd --uid 10001 --gid 10001 --home-dir /data --no-create-home \
        --shell /usr/sbin/nologin localflow \
    && mkdir /data && chown localflow:localflow /data

COPY --from=builder /opt/venv /opt/venv
COPY --from=builder /app /app

# LOCALFLOW_ADDR: a container must listen beyond loopback to be reachable, so
# LocalFlow insists on an API token; docker/entrypoint.py supplies one (from
# LOCALFLOW_API_TOKEN, or LOCALFLOW_API_TOKEN_FILE, generated there if absent).
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    LOCALFLOW_ADDR=0.0.0.0:8080 \
    LOCALFLOW_DB=/data/localflow.db \
    LOCALFLOW_API_TOKEN_FILE=/data/api-token

USER localflow
WORKDIR /app
EXPOSE 8080

# No curl in the slim image: a few lines of Python probe /health instead.
HEALTHCHECK --interval=5s --timeout=3s --start-period=30s --retries=3 \
    CMD ["python", "/app/docker/healthcheck.py"]

ENTRYPOINT ["python", "/app/docker/entrypoint.py"]
CMD ["serve"]
