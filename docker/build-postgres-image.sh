#!/usr/bin/env bash
# Build a local stand-in for the official `postgres:15-bookworm` image when no image registry
# is reachable (air-gapped CI, sandboxes). A real user never needs this: compose pulls the
# official image. The stand-in is Debian 12 with Debian's PostgreSQL 15, made with debootstrap
# like docker/build-base-image.sh, and an entrypoint that honours the same variables the
# official image documents (POSTGRES_PASSWORD, POSTGRES_USER, POSTGRES_DB, PGDATA), so
# docker-compose.postgres.yml works unchanged on both.
#
# Idempotent: does nothing when the tag exists. The root filesystem tarball is cached.
# Env: PG_IMAGE (default postgres:15-bookworm), DEBIAN_MIRROR, LOCALFLOW_DOCKER_CACHE, FORCE=1.
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
PG_IMAGE=${PG_IMAGE:-postgres:15-bookworm}
SUITE=bookworm
CACHE_DIR=${LOCALFLOW_DOCKER_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/localflow-docker}
TARBALL="$CACHE_DIR/postgres-15-$SUITE-rootfs.tar"

log() { printf '[build-postgres-image] %s\n' "$*" >&2; }

# The official image's interface: binaries on PATH, data in PGDATA, `postgres` as the command.
import_changes=(
  --change 'ENV PATH=/usr/lib/postgresql/15/bin:/usr/local/bin:/usr/local/sbin:/usr/sbin:/usr/bin:/sbin:/bin'
  --change 'ENV LANG=C.UTF-8'
  --change 'ENV PGDATA=/var/lib/postgresql/data'
  --change 'ENTRYPOINT ["/usr/local/bin/docker-entrypoint.sh"]'
  --change 'CMD ["postgres"]'
  --change 'EXPOSE 5432'
  --change 'LABEL org.localflow.base-image="debootstrap stand-in for postgres:15-bookworm"'
)

if [[ "${FORCE:-0}" != 1 ]] && docker image inspect "$PG_IMAGE" >/dev/null 2>&1; then
  log "$PG_IMAGE already present; nothing to do"
  exit 0
fi

if [[ "${FORCE:-0}" != 1 && -s "$TARBALL" ]]; then
  log "importing cached root filesystem $TARBALL"
  docker import "${import_changes[@]}" "$TARBALL" "$PG_IMAGE" >/dev/null
  exit 0
fi

# shellcheck source=docker/debian-mirror.sh
source "$here/debian-mirror.sh"
mirror=${DEBIAN_MIRROR:-$(find_mirror | head -n1)}
if [[ -z "$mirror" ]]; then
  log "no Debian '$SUITE' mirror found in /etc/apt/sources.list*; set DEBIAN_MIRROR"
  exit 1
fi
log "debootstrapping Debian $SUITE with PostgreSQL 15 from $mirror (takes a few minutes)"

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
rootfs="$work/rootfs"

keyring=()
[[ -r /usr/share/keyrings/debian-archive-keyring.gpg ]] &&
  keyring=(--keyring=/usr/share/keyrings/debian-archive-keyring.gpg)

debootstrap --variant=minbase "${keyring[@]}" \
  --include=postgresql-15,postgresql-client-15,ca-certificates \
  "$SUITE" "$rootfs" "$mirror" >"$work/debootstrap.log" 2>&1 || {
  tail -n 30 "$work/debootstrap.log" >&2
  exit 1
}

# Debian's packaging made a cluster in /var/lib/postgresql/15/main; the image keeps its data in
# PGDATA instead (a volume), initialised on first start like the official image.
rm -rf "$rootfs/var/lib/postgresql/15" "$rootfs/etc/postgresql/15"
install -d -o 0 -g 0 "$rootfs/usr/local/bin"
install -m 0755 "$here/postgres-entrypoint.sh" "$rootfs/usr/local/bin/docker-entrypoint.sh"
chroot "$rootfs" install -d -o postgres -g postgres -m 0700 /var/lib/postgresql/data
chroot "$rootfs" install -d -o postgres -g postgres -m 2775 /var/run/postgresql

find "$rootfs/usr/share/doc" -mindepth 1 ! -type d ! -name copyright -delete
rm -rf "$rootfs"/var/lib/apt/lists/* "$rootfs"/var/cache/apt/* "$rootfs"/var/log/* \
  "$rootfs"/usr/share/man/* "$rootfs"/usr/share/info/* "$rootfs"/usr/share/locale/*
rm -f "$rootfs/etc/resolv.conf" "$rootfs/etc/hostname"

mkdir -p "$CACHE_DIR"
tar --numeric-owner -C "$rootfs" -cf "$TARBALL.tmp" .
mv "$TARBALL.tmp" "$TARBALL"
docker import "${import_changes[@]}" "$TARBALL" "$PG_IMAGE" >/dev/null
log "imported $PG_IMAGE ($(docker image inspect -f '{{.Size}}' "$PG_IMAGE") bytes); cached $TARBALL"
