# Sourced by the image builders (build-base-image.sh, build-postgres-image.sh): the one place
# that debootstraps Debian $SUITE, trims it like Debian's -slim images, caches the root
# filesystem as a tarball and imports it as an image. Each builder says what differs: the
# image's tag, its packages, its `docker import --change`s and a hook that shapes the rootfs.
# shellcheck shell=bash
# Find the Debian mirror apt already uses (deb822 *.sources or one-line *.list),
# so no mirror host name is ever written into the project.
find_mirror() {
  local f
  for f in /etc/apt/sources.list.d/*.sources; do
    [[ -r "$f" ]] || continue
    # deb822: stanzas separated by blank lines; take the first enabled "deb"
    # stanza that serves the suite itself (not -updates/-security).
    awk -v suite="$SUITE" 'BEGIN { RS = ""; FS = "\n" }
      {
        types = ""; uris = ""; suites = ""; enabled = "yes"
        for (i = 1; i <= NF; i++) {
          if ($i ~ /^#/) continue
          split($i, kv, ":[ \t]*")
          key = tolower(kv[1]); val = substr($i, index($i, ":") + 1)
          if (key == "types") types = val
          else if (key == "uris") uris = val
          else if (key == "suites") suites = val
          else if (key == "enabled") enabled = val
        }
        if (enabled ~ /no/ || (" " types " ") !~ /[ \t]deb[ \t]/) next
        if ((" " suites " ") !~ ("[ \t]" suite "[ \t]")) next
        split(uris, u, /[ \t]+/); for (j in u) if (u[j] != "") { print u[j]; exit }
      }' "$f"
  done
  for f in /etc/apt/sources.list /etc/apt/sources.list.d/*.list; do
    [[ -r "$f" ]] || continue
    awk -v suite="$SUITE" '$1 == "deb" {
        i = 2
        if ($i ~ /^\[/) { while ($i !~ /\]$/ && i < NF) i++; i++ }
        if ($(i + 1) == suite) { print $i; exit }
      }' "$f"
  done
}

# build_debootstrap_image IMAGE TARBALL PACKAGES HOOK
#   IMAGE     tag to import as; nothing is done when it exists (unless FORCE=1)
#   TARBALL   cached root filesystem: re-imported in seconds instead of debootstrapping again
#   PACKAGES  comma-separated --include list for debootstrap
#   HOOK      function called with the rootfs path after debootstrap, before trimming
# Uses the caller's SUITE, log() and import_changes array; DEBIAN_MIRROR overrides the mirror.
build_debootstrap_image() {
  local image=$1 tarball=$2 packages=$3 hook=$4

  if [[ "${FORCE:-0}" != 1 ]] && docker image inspect "$image" >/dev/null 2>&1; then
    log "$image already present; nothing to do"
    return 0
  fi
  if [[ "${FORCE:-0}" != 1 && -s "$tarball" ]]; then
    log "importing cached root filesystem $tarball"
    docker import "${import_changes[@]}" "$tarball" "$image" >/dev/null
    return 0
  fi

  local mirror
  mirror=${DEBIAN_MIRROR:-$(find_mirror | head -n1)}
  if [[ -z "$mirror" ]]; then
    log "no Debian '$SUITE' mirror found in /etc/apt/sources.list*; set DEBIAN_MIRROR"
    return 1
  fi
  log "debootstrapping Debian $SUITE with $packages from $mirror (takes a few minutes)"

  local work rootfs
  work=$(mktemp -d)
  # Global on purpose: the EXIT trap runs after this function's locals are gone.
  _debootstrap_work=$work
  trap 'rm -rf "$_debootstrap_work"' EXIT
  rootfs="$work/rootfs"

  local keyring=()
  [[ -r /usr/share/keyrings/debian-archive-keyring.gpg ]] &&
    keyring=(--keyring=/usr/share/keyrings/debian-archive-keyring.gpg)

  debootstrap --variant=minbase "${keyring[@]}" --include="$packages" \
    "$SUITE" "$rootfs" "$mirror" >"$work/debootstrap.log" 2>&1 || {
    tail -n 30 "$work/debootstrap.log" >&2
    return 1
  }

  "$hook" "$rootfs"

  # Trim like Debian's "-slim" images (which the official images start from): no
  # translations, man pages or docs except the copyright files. Drop apt caches and
  # host-specific files; Docker provides /etc/resolv.conf and /etc/hostname at run time.
  find "$rootfs/usr/share/doc" -mindepth 1 ! -type d ! -name copyright -delete
  rm -rf "$rootfs"/var/lib/apt/lists/* "$rootfs"/var/cache/apt/* "$rootfs"/var/log/* \
    "$rootfs"/usr/share/man/* "$rootfs"/usr/share/info/* "$rootfs"/usr/share/locale/*
  rm -f "$rootfs/etc/resolv.conf" "$rootfs/etc/hostname"

  mkdir -p "$(dirname "$tarball")"
  tar --numeric-owner -C "$rootfs" -cf "$tarball.tmp" .
  mv "$tarball.tmp" "$tarball"
  docker import "${import_changes[@]}" "$tarball" "$image" >/dev/null
  log "imported $image ($(docker image inspect -f '{{.Size}}' "$image") bytes); cached $tarball"
}
