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

# Debian's packaging made a cluster in /var/lib/postgresql/15/main; the image keeps its data in
# PGDATA instead (a volume), initialised on first start like the official image.
like_official_postgres() {
  local rootfs=$1
  rm -rf "$rootfs/var/lib/postgresql/15" "$rootfs/etc/postgresql/15"
  install -d -o 0 -g 0 "$rootfs/usr/local/bin"
  install -m 0755 "$here/postgres-entrypoint.sh" "$rootfs/usr/local/bin/docker-entrypoint.sh"
  chroot "$rootfs" install -d -o postgres -g postgres -m 0700 /var/lib/postgresql/data
  chroot "$rootfs" install -d -o postgres -g postgres -m 2775 /var/run/postgresql
}

# shellcheck source=docker/debootstrap-image.sh
source "$here/debootstrap-image.sh"
build_debootstrap_image "$PG_IMAGE" "$CACHE_DIR/postgres-15-$SUITE-rootfs.tar" \
  postgresql-15,postgresql-client-15,ca-certificates like_official_postgres
