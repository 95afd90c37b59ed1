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
TARBALL="$CACHE_DIR/python-3.11-slim-$SUITE-rootfs.tar"

log() { printf '[build-base-image] %s\n' "$*" >&2; }

# The official image's environment, so `docker run` behaves the same.
import_changes=(
  --change 'ENV PATH=/usr/local/bin:/usr/local/sbin:/usr/sbin:/usr/bin:/sbin:/bin'
  --change 'ENV LANG=C.UTF-8'
  --change 'CMD ["python3"]'
  --change 'LABEL org.localflow.base-image="debootstrap stand-in for python:3.11-slim"'
)

if [[ "${FORCE:-0}" != 1 ]] && docker image inspect "$BASE_IMAGE" >/dev/null 2>&1; then
  log "$BASE_IMAGE already present; nothing to do"
  exit 0
fi

if [[ "${FORCE:-0}" != 1 && -s "$TARBALL" ]]; then
  log "importing cached root filesystem $TARBALL"
  docker import "${import_changes[@]}" "$TARBALL" "$BASE_IMAGE" >/dev/null
  exit 0
fi

# shellcheck source=docker/debian-mirror.sh
source "$(dirname "$0")/debian-mirror.sh"

mirror=${DEBIAN_MIRROR:-$(find_mirror | head -n1)}
if [[ -z "$mirror" ]]; then
  log "no Debian '$SUITE' mirror found in /etc/apt/sources.list*; set DEBIAN_MIRROR"
  exit 1
fi
log "debootstrapping Debian $SUITE from $mirror (takes a few minutes)"

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
rootfs="$work/rootfs"

keyring=()
[[ -r /usr/share/keyrings/debian-archive-keyring.gpg ]] &&
  keyring=(--keyring=/usr/share/keyrings/debian-archive-keyring.gpg)

debootstrap --variant=minbase "${keyring[@]}" \
  --include=python3,python3-venv,python3-pip,ca-certificates \
  "$SUITE" "$rootfs" "$mirror" >"$work/debootstrap.log" 2>&1 || {
  tail -n 30 "$work/debootstrap.log" >&2
  exit 1
}

# Make it look like the official image: python, python3 and pip on
# /usr/local/bin, and pip allowed to install into the system interpreter
# (the official image has no PEP 668 "externally managed" marker).
ln -sf /usr/bin/python3.11 "$rootfs/usr/local/bin/python3"
ln -sf /usr/bin/python3.11 "$rootfs/usr/local/bin/python"
ln -sf /usr/bin/pip3 "$rootfs/usr/local/bin/pip"
ln -sf /usr/bin/pip3 "$rootfs/usr/local/bin/pip3"
rm -f "$rootfs"/usr/lib/python3.*/EXTERNALLY-MANAGED

# Trim like Debian's "-slim" images (which the official image starts from):
# no translations, man pages or docs except the copyright files. Drop apt
# caches and host-specific files; Docker provides /etc/resolv.conf and
# /etc/hostname at run time.
find "$rootfs/usr/share/doc" -mindepth 1 ! -type d ! -name copyright -delete
rm -rf "$rootfs"/var/lib/apt/lists/* "$rootfs"/var/cache/apt/* "$rootfs"/var/log/* \
  "$rootfs"/usr/share/man/* "$rootfs"/usr/share/info/* "$rootfs"/usr/share/locale/*
rm -f "$rootfs/etc/resolv.conf" "$rootfs/etc/hostname"

mkdir -p "$CACHE_DIR"
tar --numeric-owner -C "$rootfs" -cf "$TARBALL.tmp" .
mv "$TARBALL.tmp" "$TARBALL"
docker import "${import_changes[@]}" "$TARBALL" "$BASE_IMAGE" >/dev/null
log "imported $BASE_IMAGE ($(docker image inspect -f '{{.Size}}' "$BASE_IMAGE") bytes); cached $TARBALL"
