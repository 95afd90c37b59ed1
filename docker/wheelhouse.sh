#!/usr/bin/env bash
# Download every wheel the image build needs into docker/wheelhouse/, so that
# `docker build --build-arg OFFLINE=1 .` works with no network inside the build.
# A real user's online build ignores an empty wheelhouse and uses PyPI.
#
# Contents: the runtime dependencies pinned in uv.lock (exported with their
# hashes, so the build installs exactly the locked files), plus the tools the
# Dockerfile's builder stage uses: uv (version taken from the Dockerfile) and
# the build backend (hatchling + editables) for the project's editable install.
#
# Wheels are for the image's platform (CPython 3.11, manylinux x86_64), not the
# host's, so this runs on any host with uv and pip. pip reads its index/proxy
# configuration from the host as usual. Idempotent: a stamp records the inputs,
# and nothing is downloaded when they have not changed.
set -euo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
dest="$root/docker/wheelhouse"
log() { printf '[wheelhouse] %s\n' "$*" >&2; }

uv_version=$(sed -n 's/^ARG UV_VERSION=//p' "$root/Dockerfile")
build_tools=("uv==$uv_version" hatchling editables)
# The same export as the Dockerfile's, extras included (psycopg for PostgreSQL).
export_args=(--quiet --frozen --no-dev --extra postgres --no-emit-project)

# Anything that changes what we would download changes the stamp.
stamp=$( { sha256sum "$root/uv.lock" "$root/pyproject.toml"; echo "${build_tools[*]} ${export_args[*]}"; } |
  sha256sum | cut -d' ' -f1)
if [[ -f "$dest/.stamp" && "$(cat "$dest/.stamp")" == "$stamp" ]]; then
  log "up to date ($dest)"
  exit 0
fi

# Start clean so wheels of versions no longer locked do not linger.
find "$dest" -mindepth 1 -maxdepth 1 ! -name .gitignore -exec rm -rf {} +

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
(cd "$root" && uv export "${export_args[@]}" -o "$tmp/requirements.txt")

# pip does not widen an explicit --platform to older manylinux tags, so list
# every glibc level up to bookworm's (2.36).
platforms=(--platform manylinux2014_x86_64)
for minor in $(seq 5 36); do platforms+=(--platform "manylinux_2_${minor}_x86_64"); done
# Any pip will do; uv-made virtualenvs (e.g. under `uv run`) have none, so fall
# back to running pip through uv. Either way pip reads the host's pip config.
if python3 -m pip --version >/dev/null 2>&1; then pip=(python3 -m pip); else pip=(uvx pip); fi
pip_download=("${pip[@]}" download --quiet --quiet --dest "$dest" --only-binary=:all:
  --implementation cp --python-version 3.11 --abi cp311 "${platforms[@]}")

log "downloading locked runtime dependencies"
"${pip_download[@]}" --require-hashes --no-deps -r "$tmp/requirements.txt"
log "downloading build tools: ${build_tools[*]}"
"${pip_download[@]}" "${build_tools[@]}"

echo "$stamp" >"$dest/.stamp"
log "$(find "$dest" -name '*.whl' | wc -l) wheels, $(du -sh "$dest" | cut -f1) in $dest"
