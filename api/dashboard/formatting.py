"""Jinja filters: times relative to now (exact time on hover), sizes, durations, JSON."""

from __future__ import annotations

import shlex
import zoneinfo
from datetime import UTC, datetime
from typing import Any

import msgspec
from markupsafe import Markup, escape


def _ts(value: datetime | float | None) -> float | None:
    if value is None:
        return None
    if isinstance(value, datetime):
        return value.timestamp()
    return float(value)


def exact(value: datetime | float | None) -> str:
    ts = _ts(value)
    if ts is None:
        return ""
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def iso(value: datetime | float | None) -> str:
    ts = _ts(value)
    return "" if ts is None else datetime.fromtimestamp(ts, UTC).isoformat(timespec="seconds")


def span(seconds: float) -> str:
    """A human length of time: 850 ms, 12 s, 4 min 5 s, 3 h 20 min, 2 d 4 h."""
    seconds = abs(seconds)
    if seconds < 1:
        return f"{seconds * 1000:.0f} ms"
    if seconds < 60:
        return f"{seconds:.0f} s" if seconds >= 10 else f"{seconds:.1f} s"
    minutes, secs = divmod(int(seconds), 60)
    if minutes < 60:
        return f"{minutes} min {secs} s" if secs and minutes < 10 else f"{minutes} min"
    hours, minutes = divmod(minutes, 60)
    if hours < 48:
        return f"{hours} h {minutes} min" if minutes else f"{hours} h"
    days, hours = divmod(hours, 24)
    return f"{days} d {hours} h" if hours else f"{days} d"


def ago(value: datetime | float | None, now: float) -> str:
    ts = _ts(value)
    if ts is None:
        return "—"
    delta = now - ts
    if abs(delta) < 1:
        return "just now"
    return f"{span(delta)} ago" if delta > 0 else f"in {span(delta)}"


_NONE = Markup('<span class="muted">—</span>')


def when(value: datetime | float | None, now: float) -> Markup:
    """<time> showing "12 s ago", with the exact UTC time as its hover title."""
    ts = _ts(value)
    if ts is None:
        return _NONE
    at = datetime.fromtimestamp(ts, UTC)
    # Built by hand rather than by Markup.format (a few times per row, every 2 s per tab):
    # every part is made here from a number, so there is nothing in it to escape.
    return Markup(f'<time datetime="{at.isoformat(timespec="seconds")}" '  # noqa: S704
                  f'title="{at.strftime("%Y-%m-%d %H:%M:%S UTC")}">{ago(ts, now)}</time>')


def in_zone(value: datetime | float | None, zone: str) -> str:
    """A time as the clock on the wall of that timezone shows it: "Mon 09:00 CET"."""
    ts = _ts(value)
    if ts is None:
        return ""
    try:
        tz = zoneinfo.ZoneInfo(zone)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError):
        tz = UTC
    local = datetime.fromtimestamp(ts, tz)
    return f"{local:%a %Y-%m-%d %H:%M} {local.tzname()}"


def took(start: datetime | float | None, end: datetime | float | None, now: float) -> str:
    """Duration from start to end (or to now, while it is still going)."""
    s = _ts(start)
    if s is None:
        return "—"
    e = _ts(end)
    return span((now if e is None else e) - s) + ("" if e is not None else " so far")


def exact_span(seconds: float) -> str:
    """A setting's length of time, exactly and with units: 500 ms, 30 s, 1 h 30 min, 7 d."""
    if seconds < 1:
        return f"{seconds * 1000:g} ms"
    parts, rest = [], seconds
    for unit, length in (("d", 86400), ("h", 3600), ("min", 60)):
        whole, rest = divmod(rest, length)
        if whole:
            parts.append(f"{int(whole)} {unit}")
    if rest or not parts:
        parts.append(f"{rest:g} s")
    return " ".join(parts)


def size(n: int | None) -> str:
    if n is None:
        return "—"
    value = float(n)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if value < 1024 or unit == "GiB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{value:.1f} TiB"  # pragma: no cover - the loop returns at GiB


def thousands(n: int | None, at_least: bool = False) -> str:
    """12,345: a count read at a glance ("…" while it is still being counted; "10,000+" for
    a count that stopped at its cap, shared/store/counting.py)."""
    return "…" if n is None else f"{n:,}+" if at_least else f"{n:,}"


def pretty(value: Any) -> str:
    """Indented JSON, as a person reads it; strings pass through unquoted."""
    if isinstance(value, str):
        return value
    return msgspec.json.format(msgspec.json.encode(value), indent=2).decode()


_MACRO_WORDS = {
    "@yearly": "At 00:00 on 1 January", "@annually": "At 00:00 on 1 January",
    "@monthly": "At 00:00, on day 1 of the month", "@weekly": "At 00:00, only on Sunday",
    "@daily": "At 00:00", "@midnight": "At 00:00", "@hourly": "Every hour",
}


def cron_words(expr: str) -> str:
    """A cron expression in plain words ("At 09:00, Monday through Friday"), by the
    cron-descriptor library; "" for one it cannot read (the validator says why elsewhere)."""
    text = " ".join(str(expr).split())
    if text.lower() in _MACRO_WORDS:
        return _MACRO_WORDS[text.lower()]
    # Imported with the first schedule shown, not at start-up: an API process that renders
    # no schedule page does not need it (bench/README.md, "Session 4: API memory").
    import cron_descriptor

    options = cron_descriptor.Options()
    options.use_24hour_time_format = True
    try:
        return cron_descriptor.ExpressionDescriptor(text, options).get_description()
    except Exception:  # any expression it cannot describe just gets no words
        return ""


def summary(task: Any) -> str:
    """One line saying what a task (or a schedule's task) does: the command line, or the
    method and URL."""
    p = task.payload if isinstance(task.payload, dict) else {}
    kind = getattr(task, "task_type", None) or task.type
    if kind == "shell":
        return shlex.join([str(p.get("command", "")), *(str(a) for a in p.get("args", []))])
    if kind == "http":
        return f"{p.get('method', 'GET')} {p.get('url', '')}"
    return pretty(task.payload)


TAIL_LINES = 8
TAIL_CHARS = 1200


def error_tail(output: Any) -> str | None:
    """What a failure said in its own words: the last lines of a command's stderr, or the body
    of an HTTP error answer. A generic "exited with status 3" is shown next to this."""
    if not isinstance(output, dict):
        return None
    stderr = output.get("stderr")
    if isinstance(stderr, str) and stderr.strip():
        lines = [line for line in stderr.rstrip().splitlines() if line.strip()]
        return "\n".join(lines[-TAIL_LINES:])[-TAIL_CHARS:]
    body, code = output.get("body"), output.get("status_code")
    if isinstance(body, str) and body.strip() and isinstance(code, int) and code >= 400:
        return body.strip()[:TAIL_CHARS]
    return None


def short_error(task: Any, width: int = 110) -> str:
    """One line for a failed row of the list: the error and the last line of its cause."""
    error = (task.last_error or "").strip()
    tail = error_tail(task.result)
    if tail:
        last = tail.splitlines()[-1].strip() if task.type != "http" else " ".join(tail.split())
        error = f"{error} — {last}" if error else last
    return error if len(error) <= width else error[: width - 1] + "…"


_BADGES: dict[str, Markup] = {}


def badge(status: str) -> Markup:
    found = _BADGES.get(status)
    if found is None:
        found = Markup('<span class="badge badge-{0}" data-status="{0}">{0}</span>').format(
            escape(status))
        if len(_BADGES) < 64:  # the statuses and views: a handful, whatever is asked
            _BADGES[status] = found
    return found


FILTERS = {
    "exact": exact, "iso": iso, "span": span, "size": size, "pretty": pretty, "badge": badge,
    "summary": summary, "thousands": thousands, "error_tail": error_tail,
    "short_error": short_error, "cron_words": cron_words, "in_zone": in_zone,
}
GLOBALS = {"when": when, "ago": ago, "took": took}
