#!/usr/bin/env bash
# Entrypoint of the local stand-in for the official PostgreSQL image (build-postgres-image.sh).
# It honours the variables the official image documents, so one compose file serves both:
#   POSTGRES_PASSWORD (required), POSTGRES_USER (default postgres), POSTGRES_DB (default: the
#   user's name), PGDATA (default /var/lib/postgresql/data).
# First start on an empty PGDATA: initdb with that user and password (scram-sha-256 for network
# clients), listen on every address, create the database. Then PostgreSQL runs as PID 1 as the
# `postgres` user, so `docker stop` (SIGINT, the image's stop signal) is a fast clean shutdown.
set -euo pipefail

PGDATA=${PGDATA:-/var/lib/postgresql/data}
export PGDATA

if [[ "${1:-}" != postgres ]]; then
  exec "$@"
fi

if [[ $(id -u) == 0 ]]; then
  install -d -o postgres -g postgres -m 0700 "$PGDATA"
  install -d -o postgres -g postgres -m 2775 /var/run/postgresql
  exec setpriv --reuid=postgres --regid=postgres --init-groups "$0" "$@"
fi

if [[ ! -s "$PGDATA/PG_VERSION" ]]; then
  user=${POSTGRES_USER:-postgres}
  db=${POSTGRES_DB:-$user}
  if [[ -z "${POSTGRES_PASSWORD:-}" ]]; then
    echo "error: POSTGRES_PASSWORD is not set; the database would accept anyone" >&2
    exit 1
  fi
  # Names go into SQL below: allow only plain identifiers.
  for name in "$user" "$db"; do
    if [[ ! "$name" =~ ^[A-Za-z_][A-Za-z0-9_]*$ ]]; then
      echo "error: '$name' is not a plain identifier (letters, digits, _)" >&2
      exit 1
    fi
  done
  pwfile=$(mktemp)
  printf '%s' "$POSTGRES_PASSWORD" >"$pwfile"
  initdb --username="$user" --pwfile="$pwfile" --auth-local=trust \
    --auth-host=scram-sha-256 --encoding=UTF8 -D "$PGDATA" >/dev/null
  rm -f "$pwfile"
  echo "host all all all scram-sha-256" >>"$PGDATA/pg_hba.conf"
  echo "listen_addresses = '*'" >>"$PGDATA/postgresql.conf"
  if [[ "$db" != postgres ]]; then
    echo "CREATE DATABASE \"$db\" OWNER \"$user\";" |
      postgres --single -D "$PGDATA" -j postgres >/dev/null
  fi
  echo "PostgreSQL initialised in $PGDATA: user $user, database $db"
fi

exec "$@"
