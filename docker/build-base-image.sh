#!/usr/bin/env bash
# Build a local stand-in for the official `python:3.11-slim` image when no image
# registry is reachable (air-gapped CI, sandboxes). A real user never needs this:
# `docker build` pulls the official image. The stand-in is Debian 12 (bookworm,
# the same distribution the official image is built on) made with debootstrap,
# with python3.11 reachable as /usr/local/bin/python{,3} and pip like the official
# image, so the project's Dockerfile works unchanged on both.
#
# Idempotent: does nothing when the tag already exists. The root filesystem
# tarball is cached (LOCALFLOW_DOCKER_CACHE) so a CI runner with a cold Docker
# daemon but a warm cache re-imports it in seconds instead of debootstrapping.
#
# Env: BASE_IMAGE (default python:3.11-slim), DEBIAN_MIRROR (default: read from
# apt's configured sources), LOCALFLOW_DOCKER_CACHE, FORCE=1 to rebuild.
set -euo pipefail

BASE_IMAGE=${BASE_IMAGE:-python:3.11-slim}
SUITE=bookworm
CACHE_DIR=${LOCALFLOW_DOCKER_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/localflow-docker}

log() { printf '[build-base-image] %s\n' "$*" >&2; }

# The official image's environment, so `docker run` behaves the same.
import_changes=(
  --change 'ENV PATH=/usr/local/bin:/usr/local/sbin:/usr/sbin:/usr/bin:/sbin:/bin'
  --change 'ENV LANG=C.UTF-8'
  --change 'CMD ["python3"]'
  --change 'LABEL org.localflow.base-image="debootstrap stand-in for python:3.11-slim"'
)

# Make it look like the official image: python, python3 and pip on /usr/local/bin, and pip
# allowed to install into the system interpreter (the official image has no PEP 668
# "externally managed" marker).
like_official_python() {
  local rootfs=$1
  ln -sf /usr/bin/python3.11 "$rootfs/usr/local/bin/python3"
  ln -sf /usr/bin/python3.11 "$rootfs/usr/local/bin/python"
  ln -sf /usr/bin/pip3 "$rootfs/usr/local/bin/pip"
  ln -sf /usr/bin/pip3 "$rootfs/usr/local/bin/pip3"
  rm -f "$rootfs"/usr/lib/python3.*/EXTERNALLY-MANAGED
}

# shellcheck source=docker/debootstrap-image.sh
source "$(dirname "$0")/debootstrap-image.sh"
build_debootstrap_image "$BASE_IMAGE" "$CACHE_DIR/python-3.11-slim-$SUITE-rootfs.tar" \
  python3,python3-venv,python3-pip,ca-certificates like_official_python
