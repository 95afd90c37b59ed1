#!/usr/bin/env bash
# Make sure a Docker engine answers on this machine; start dockerd if none does.
# For CI runners and sandboxes without systemd: on a desktop or server the
# engine is already a service and this script only checks it. Idempotent.
set -euo pipefail

log() { printf '[start-dockerd] %s\n' "$*" >&2; }
LOG_FILE=${DOCKERD_LOG:-/var/log/dockerd.log}

if docker info >/dev/null 2>&1; then
  log "Docker engine already running"
  exit 0
fi
if [[ $(id -u) != 0 ]]; then
  log "no Docker engine reachable and not root: start Docker (or run this as root)"
  exit 1
fi

# A live process that is not a zombie (a killed dockerd can linger as one).
alive() { [[ -r /proc/$1/status ]] && ! grep -q '^State:[[:space:]]*Z' "/proc/$1/status"; }

# Prefer the service manager when there is one; otherwise run dockerd ourselves.
pid=""
if command -v systemctl >/dev/null 2>&1 && [[ -d /run/systemd/system ]]; then
  systemctl start docker
else
  # A dockerd killed with its containerd (e.g. when the previous CI job's
  # processes were ended) leaves pid files behind: a new dockerd then refuses to
  # start, or waits for the dead containerd instead of starting its own.
  for pidfile in /var/run/docker.pid /var/run/docker/containerd/containerd.pid; do
    if [[ -f $pidfile ]] && ! alive "$(cat "$pidfile")"; then
      log "removing stale $pidfile"
      rm -f "$pidfile"
    fi
  done
  log "starting dockerd in the background (log: $LOG_FILE)"
  # setsid: not in this shell's process group, so it outlives the script.
  setsid dockerd >>"$LOG_FILE" 2>&1 </dev/null &
  pid=$!
fi

for _ in $(seq 60); do
  if docker info >/dev/null 2>&1; then
    log "Docker engine is up"
    exit 0
  fi
  if [[ -n $pid ]] && ! alive "$pid"; then
    log "dockerd exited; last log lines:"
    tail -n 20 "$LOG_FILE" >&2 || true
    exit 1
  fi
  sleep 1
done
log "dockerd did not come up within 60s; last log lines:"
tail -n 20 "$LOG_FILE" >&2 || true
exit 1
