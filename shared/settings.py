"""Every setting LocalFlow reads, its default, and its environment variable: one place.

The command line (localflow/cli.py) builds flags from FIELDS, so a flag and its variable can
never drift apart; flags win over the environment.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import msgspec

from shared.durations import parse_duration
from shared.schemas import QUEUE_NAME_PATTERN


class Settings(msgspec.Struct, kw_only=True):
    addr: str = "127.0.0.1:8080"
    db: str = "localflow.db"
    workers: int = 8
    # The queues this worker takes tasks from (docs/queues.md); empty: every queue.
    queues: tuple[str, ...] = ()
    # Retention (docs/retention.md): finished tasks older than this are pruned; 0 keeps them.
    retain_succeeded: float = 7 * 86400.0
    retain_failed: float = 30 * 86400.0
    retain_cancelled: float = 7 * 86400.0
    retain_audit: float = 90 * 86400.0  # the audit trail (docs/audit.md); 0 keeps it
    prune_interval: float = 60.0
    poll: float = 0.25
    # Waiting requests (GET /api/tasks/{id}?wait=) are woken by commits; this re-read is only
    # for a lost wake-up (shared/task_watch.py).
    wait_poll: float = 2.0
    # How long the task event log (GET /api/events, Last-Event-ID) keeps events.
    events_window: float = 3600.0
    schedule_interval: float = 10.0
    debug: bool = False
    grace: float = 30.0
    lease: float = 30.0
    metrics_addr: str = "127.0.0.1:9091"
    api_token: str | None = None
    # The worker's own /metrics (`localflow worker`); the worker needs no API token.
    metrics_token: str | None = None
    insecure: bool = False
    # Wrong tokens one client address may send in a minute before it gets 429s (shared/tokens.py).
    auth_failures: int = 10
    # Run task programs as this user (the worker must start as root); empty: as the worker.
    task_user: str = ""
    # FULL: a task is on disk before the API answers 201 (group commit keeps that cheap).
    synchronous: str = "FULL"
    log_format: str = "auto"
    access_log: bool = False
    retry_base: float = 2.0
    retry_max: float = 3600.0
    default_timeout: float = 300.0
    default_max_attempts: int = 3
    max_payload_bytes: int = 256 * 1024
    output_limit: int = 64 * 1024
    # Running shell tasks' output tails are stored this often, when they changed
    # (worker/live_output.py, docs/live_output.md).
    live_output_interval: float = 1.0
    # Task policy (shared/policy.py, docs/security.md). Empty allowlists mean "anything".
    shell_allow: tuple[str, ...] = ()
    shell_workdir: str = ""  # empty: the system temporary directory
    http_allow_hosts: tuple[str, ...] = ()
    http_deny_hosts: tuple[str, ...] = ()
    http_max_redirects: int = 5
    http_max_response_bytes: int = 10 * 1024 * 1024
    # Webhooks (docs/webhooks.md). Without a secret no task may carry a callback_url: a
    # receiver could not tell LocalFlow's POSTs from anyone else's.
    webhook_secret: str | None = None
    webhook_max_tries: int = 8
    webhook_retry_base: float = 10.0  # seconds before the 2nd try; doubles after each failure
    webhook_retry_max: float = 3600.0  # the longest wait between two tries
    webhook_timeout: float = 10.0  # one try: connect, send, answer, all of it
    webhook_workers: int = 16  # deliveries one worker process tries at the same time

    @property
    def host_port(self) -> tuple[str, int]:
        return split_addr(self.addr)


def split_addr(addr: str) -> tuple[str, int]:
    """"127.0.0.1:8080" -> ("127.0.0.1", 8080); ":8080" binds every interface, as in Go;
    port 0 lets the system choose."""
    host, sep, port = addr.rpartition(":")
    if not sep or not port.isdigit() or not 0 <= int(port) < 65536:
        raise ValueError(f"invalid address {addr!r}: expected HOST:PORT, like 127.0.0.1:8080")
    host = host.strip("[]") or "0.0.0.0"  # noqa: S104 - ":8080" means all interfaces, as the seed
    return host, int(port)


def _parse_bool(text: str) -> bool:
    lowered = text.strip().lower()
    if lowered in ("1", "true", "yes", "on"):
        return True
    if lowered in ("0", "false", "no", "off", ""):
        return False
    raise ValueError(f"invalid boolean {text!r}: use true or false")


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise ValueError(f"must be at least 1, got {value}")
    return value


def _non_negative_int(text: str) -> int:
    value = int(text)
    if value < 0:
        raise ValueError(f"must be 0 or more, got {value}")
    return value


def _commands(text: str) -> tuple[str, ...]:
    """"echo,/usr/local/bin/report": program names (looked up on PATH) or absolute paths."""
    names = tuple(part.strip() for part in text.split(",") if part.strip())
    for name in names:
        if "/" in name and not name.startswith("/"):
            raise ValueError(f"{name!r}: give a program name or an absolute path")
    return names


_HOST_NAME = re.compile(r"^(\*\.)?[a-z0-9_]([a-z0-9_-]{0,62})(\.[a-z0-9_]([a-z0-9_-]{0,62}))*$")


_QUEUE_NAME = re.compile(QUEUE_NAME_PATTERN)


def _queue_names(text: str) -> tuple[str, ...]:
    """"emails,reports": the queues a worker serves; empty: all."""
    names = tuple(part.strip() for part in text.split(",") if part.strip())
    for name in names:
        if not _QUEUE_NAME.match(name):
            raise ValueError(f"{name!r} is not a queue name (letters, digits, '-', '_', '.'; "
                             "up to 64 characters)")
    return tuple(dict.fromkeys(names))


def _retention(text: str) -> float:
    """"7d", "12h", "90m"...; "0" or "forever": keep for ever (0.0)."""
    if text.strip().lower() == "forever":
        return 0.0
    return parse_duration(text)


def _positive_duration(text: str) -> float:
    seconds = parse_duration(text)
    if seconds <= 0:
        raise ValueError(f"invalid duration {text!r}: must be more than 0")
    return seconds


def _hosts(text: str) -> tuple[str, ...]:
    """"example.com,*.internal,10.0.0.0/8,::1": host names, *.suffix wildcards, IPs, CIDRs."""
    entries = tuple(part.strip().lower().rstrip(".") for part in text.split(",") if part.strip())
    for entry in entries:
        try:
            ipaddress.ip_network(entry, strict=False)
        except ValueError:
            if not _HOST_NAME.match(entry):
                raise ValueError(
                    f"{entry!r} is neither a host name, a *.domain wildcard, an IP address "
                    "nor a CIDR range like 10.0.0.0/8"
                ) from None
    return entries


def _addr_or_off(text: str) -> str:
    if text.strip().lower() == "off":
        return "off"
    split_addr(text)  # raises ValueError naming the expected form
    return text


def _choice(*options: str) -> Callable[[str], str]:
    def parse(text: str) -> str:
        if text not in options:
            raise ValueError(f"invalid value {text!r}: expected one of {', '.join(options)}")
        return text

    return parse


@dataclass(frozen=True)
class Field:
    name: str
    parse: Callable[[str], Any]
    help: str
    flag: bool = True  # False: environment only (secrets do not belong in `ps` output)

    @property
    def env(self) -> str:
        return "LOCALFLOW_" + self.name.upper()

    @property
    def option(self) -> str:
        return "--" + self.name.replace("_", "-")


FIELDS: tuple[Field, ...] = (
    Field("addr", str, "HTTP bind address, HOST:PORT"),
    Field("db", str, "SQLite database file, or postgresql://user:password@host:port/dbname"),
    Field("workers", _positive_int, "concurrent task slots in the worker"),
    Field("queues", _queue_names,
          "comma list of the queues this worker takes tasks from; empty: every queue"),
    Field("retain_succeeded", _retention,
          "prune succeeded tasks finished longer ago than this (0 or 'forever': keep)"),
    Field("retain_failed", _retention,
          "prune failed tasks finished longer ago than this (0 or 'forever': keep)"),
    Field("retain_cancelled", _retention,
          "prune cancelled tasks finished longer ago than this (0 or 'forever': keep)"),
    Field("retain_audit", _retention,
          "prune audit trail entries older than this (0 or 'forever': keep)"),
    Field("prune_interval", _positive_duration, "how often the worker prunes old tasks"),
    Field("poll", parse_duration, "longest wait between queue checks (wake-ups come sooner)"),
    Field("wait_poll", parse_duration,
          "longest a waiting GET /api/tasks/{id}?wait= goes without a re-read, should a "
          "wake-up be lost"),
    Field("events_window", parse_duration,
          "how long task events are kept for GET /api/events clients that reconnect"),
    Field("schedule_interval", parse_duration, "longest wait between schedule checks"),
    Field("live_output_interval", _positive_duration,
          "how often the worker stores running shell tasks' output tails (when they changed)"),
    Field("debug", _parse_bool, "enable /debug profiling endpoints"),
    Field("grace", parse_duration, "on SIGTERM, how long running tasks may take to finish"),
    Field("lease", parse_duration, "visibility window of a claimed task; heartbeats extend it"),
    Field("metrics_addr", _addr_or_off,
          "worker's own /health and /metrics address, HOST:PORT, or 'off'"),
    Field("api_token", str, "bearer token required by /api, /metrics and /debug", flag=False),
    Field("metrics_token", str,
          "bearer token required by the worker's own /metrics (`localflow worker`)", flag=False),
    Field("insecure", _parse_bool, "allow listening beyond loopback without an API token"),
    Field("auth_failures", _positive_int,
          "wrong tokens one client address may send per minute before it gets 429s "
          "(behind a reverse proxy every client shares the proxy's address)"),
    Field("synchronous", _choice("FULL", "NORMAL"), "SQLite synchronous mode"),
    Field("log_format", _choice("auto", "json", "console"), "log format"),
    Field("access_log", _parse_bool, "log every API request (method, route, status, time)"),
    Field("shell_allow", _commands,
          "comma list of programs shell tasks may run (names on PATH or absolute paths); "
          "empty: any"),
    Field("shell_workdir", str, "working directory of every shell task (default: system temp)"),
    Field("task_user", str,
          "run task programs as this user (name or uid; LocalFlow must start as root); "
          "empty: as LocalFlow itself"),
    Field("http_allow_hosts", _hosts,
          "comma list of hosts/IPs/CIDRs http tasks may call; empty: any not denied"),
    Field("http_deny_hosts", _hosts,
          "comma list of hosts/IPs/CIDRs http tasks may never call (169.254.0.0/16 always is)"),
    Field("http_max_redirects", _non_negative_int,
          "redirects an http task follows, each hop checked against the host lists"),
    Field("http_max_response_bytes", _positive_int,
          "largest response body an http task accepts; larger fails the attempt"),
    Field("webhook_secret", str,
          "HMAC-SHA256 key that signs webhook deliveries (docs/webhooks.md); without it tasks "
          "may not carry a callback_url", flag=False),
    Field("webhook_max_tries", _positive_int,
          "tries of one webhook delivery before it is given up"),
    Field("webhook_retry_base", _positive_duration,
          "wait before a webhook's second try; doubles after each failed try (with jitter)"),
    Field("webhook_retry_max", _positive_duration, "longest wait between two webhook tries"),
    Field("webhook_timeout", _positive_duration,
          "how long one webhook try may take (connect, send, answer)"),
    Field("webhook_workers", _positive_int,
          "webhook deliveries one worker process tries at the same time"),
)

_BOOL_FIELDS = {"debug", "insecure", "access_log"}
# Settings given as a duration (seconds once parsed) and as a number of bytes: the dashboard
# shows them with their unit.
DURATION_FIELDS = frozenset(
    f.name for f in FIELDS if f.parse in (parse_duration, _retention, _positive_duration)
)
BYTE_FIELDS = frozenset({"http_max_response_bytes"})


def settings_from(env: Mapping[str, str], overrides: Mapping[str, Any] | None = None) -> Settings:
    """Settings from the environment, then explicit overrides (parsed flags) on top."""
    values: dict[str, Any] = {}
    for field in FIELDS:
        raw = env.get(field.env)
        if raw is None or (raw == "" and field.name not in _BOOL_FIELDS):
            continue
        try:
            values[field.name] = field.parse(raw)
        except ValueError as exc:
            raise ValueError(f"{field.env}: {exc}") from None
    for name, value in (overrides or {}).items():
        if value is not None:
            values[name] = value
    return Settings(**values)


def is_loopback(host: str) -> bool:
    """localhost, 127.0.0.0/8 or ::1 (a name like 127.0.0.1.example.com is not)."""
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False
