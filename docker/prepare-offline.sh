#!/usr/bin/env bash
# Prepare a machine without image-registry access to build and run LocalFlow's
# containers (and so to run tests/compose): CI calls this before the tests.
#   1. install docker.io, docker-compose and debootstrap if missing (apt, as root)
#   2. start the Docker engine if it is not running
#   3. provide the base image python:3.11-slim: pull it if a registry answers,
#      otherwise build a stand-in from Debian packages (docker/build-base-image.sh)
#   4. provide postgres:15-bookworm for docker-compose.postgres.yml the same way
#      (docker/build-postgres-image.sh)
#   5. download the wheels the image build needs (docker/wheelhouse.sh)
# Every step is skipped when its result is already there, so re-running is cheap.
# Build offline afterwards with LOCALFLOW_OFFLINE_BUILD=1 (compose) or
# --build-arg OFFLINE=1 (docker build).
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
BASE_IMAGE=${BASE_IMAGE:-python:3.11-slim}
PG_IMAGE=${PG_IMAGE:-postgres:15-bookworm}
log() { printf '[prepare-offline] %s\n' "$*" >&2; }

have_compose() { docker compose version >/dev/null 2>&1 || command -v docker-compose >/dev/null 2>&1; }

missing=()
command -v docker >/dev/null 2>&1 || missing+=(docker.io)
have_compose || missing+=(docker-compose)
command -v debootstrap >/dev/null 2>&1 || missing+=(debootstrap)
if ((${#missing[@]})); then
  if [[ $(id -u) != 0 ]]; then
    log "missing ${missing[*]} and not root: install them, or run this as root"
    exit 1
  fi
  log "installing ${missing[*]}"
  # Lock timeout: another apt run (e.g. machine provisioning) may hold the lock.
  apt_opts=(-o DPkg::Lock::Timeout=600 -q)
  apt-get "${apt_opts[@]}" update
  DEBIAN_FRONTEND=noninteractive apt-get "${apt_opts[@]}" install -y --no-install-recommends \
    "${missing[@]}"
fi

"$here/start-dockerd.sh"

if docker image inspect "$BASE_IMAGE" >/dev/null 2>&1; then
  log "$BASE_IMAGE present"
elif timeout 120 docker pull "$BASE_IMAGE" >/dev/null 2>&1; then
  log "pulled $BASE_IMAGE"
else
  log "cannot pull $BASE_IMAGE; building a local stand-in"
  "$here/build-base-image.sh"
fi

if docker image inspect "$PG_IMAGE" >/dev/null 2>&1; then
  log "$PG_IMAGE present"
elif timeout 120 docker pull "$PG_IMAGE" >/dev/null 2>&1; then
  log "pulled $PG_IMAGE"
else
  log "cannot pull $PG_IMAGE; building a local stand-in"
  PG_IMAGE="$PG_IMAGE" "$here/build-postgres-image.sh"
fi

"$here/wheelhouse.sh"
log "ready"
