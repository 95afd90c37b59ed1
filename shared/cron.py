"""Cron arithmetic for schedules: which instants a 5-field expression fires at in a timezone.

croniter does the field matching. This module adds what a scheduler needs on top of it:
validation that names the problem, times as Unix seconds, and one explicit rule for the two
daylight-saving days (docs/schedules.md):

- spring forward: a wall time that does not exist (02:30 in Europe/Berlin) fires once, at the
  first instant after the gap (03:00 local) -- croniter's own choice, which we keep;
- fall back: a wall time that happens twice fires only at its first occurrence, unless the
  hour field is a wildcard (`*`, `*/2`): such a schedule is "every N hours/minutes" in
  spirit and fires in both copies of the repeated hour, so it never goes silent for an hour.

Every function here is pure: the same (expression, timezone, instant) gives the same answer in
every process, which is what lets several schedulers agree on the fire times.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from functools import lru_cache
from types import ModuleType
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

MAX_EXPR_LENGTH = 200
MAX_PREVIEW = 100

_MACROS = {
    "@yearly": "0 0 1 1 *",
    "@annually": "0 0 1 1 *",
    "@monthly": "0 0 1 * *",
    "@weekly": "0 0 * * 0",
    "@daily": "0 0 * * *",
    "@midnight": "0 0 * * *",
    "@hourly": "0 * * * *",
}
# croniter extensions we refuse: H (hashed) and R (random) give different times in different
# processes unless every process is handed the same seed, which would break exactly-once.
_NONDETERMINISTIC = re.compile(r"(?<![A-Za-z])[HhRr](?![A-Za-z])")
_FIELDS = ("minute", "hour", "day of month", "month", "day of week")
# Per field: the lowest and highest value, and how many distinct values it has (day of week
# takes 0-7 with 0 and 7 both Sunday). A step goes from 1 up to that count.
_BOUNDS = ((0, 59, 60), (0, 23, 24), (1, 31, 31), (1, 12, 12), (0, 7, 7))
_NAMES = (
    {}, {}, {},
    {m: i for i, m in enumerate(("jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep",
                                 "oct", "nov", "dec"), 1)},
    {d: i for i, d in enumerate(("sun", "mon", "tue", "wed", "thu", "fri", "sat"))},
)
# One item of a comma list: `*`, `5`, `1-5`, `MON-FRI`, each with an optional `/step`. Items
# using croniter's extensions (L, W, #, ?) do not match, and croniter alone judges them.
_ITEM = re.compile(r"(?P<base>\*|(?P<low>[0-9]+|[A-Za-z]{3})(?:-(?P<high>[0-9]+|[A-Za-z]{3}))?)"
                   r"(?:/(?P<step>[0-9]+))?")


def _croniter() -> ModuleType:
    """croniter, imported with the first expression parsed: with the dateutil it loads it is
    ~0.6 MB of a process (bench/README.md, "Session 4: API memory"), and a `localflow api`
    that is never asked about a schedule does not need it."""
    import croniter

    return croniter


class CronError(ValueError):
    """An expression or timezone we cannot schedule; the message says what is wrong."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field


@dataclass(frozen=True)
class Cron:
    """A validated expression in a timezone."""

    expr: str  # as the user wrote it
    fields: str  # the five fields (a macro expanded)
    tz: ZoneInfo
    hour_wildcard: bool

    def next_after(self, after: float, n: int = 1) -> list[float]:
        """The first `n` fire instants strictly after `after` (Unix seconds), ascending."""
        start = datetime.fromtimestamp(after, self.tz)
        it = _croniter().croniter(self.fields, start)
        out: list[float] = []
        last = after
        while len(out) < n:
            when = _checked(it.get_next, datetime)
            if self._skipped(when):
                continue
            ts = when.timestamp()
            # Two wall times can land on one instant (02:30 and 03:00 on the spring-forward
            # day both mean 03:00): it is one fire.
            if ts > last:
                out.append(ts)
                last = ts
        return out

    def latest_at_or_before(self, now: float) -> float | None:
        """The last fire instant <= now, or None if there is none in croniter's search range."""
        # croniter's get_prev is strictly before its start; nudge past `now` so a fire exactly
        # at `now` counts. A millisecond is far below cron's one-second resolution.
        it = _croniter().croniter(self.fields, datetime.fromtimestamp(now + 0.001, self.tz))
        # Skipped second occurrences come at most one repeated hour's worth (60) in a row.
        for _ in range(64):
            try:
                when = _checked(it.get_prev, datetime)
            except CronError:
                return None
            if not self._skipped(when) and when.timestamp() <= now:
                return when.timestamp()
        return None

    def _skipped(self, when: datetime) -> bool:
        return not self.hour_wildcard and _second_occurrence(when)


def _second_occurrence(when: datetime) -> bool:
    """Is this the later of two instants that share a wall time (the fall-back hour)?"""
    # PEP 495: fold=0 is the earlier reading of an ambiguous wall time, fold=1 the later. In
    # a fall-back fold the earlier offset is the larger one (in a spring gap, the smaller).
    naive = when.replace(tzinfo=None)
    first = naive.replace(tzinfo=when.tzinfo, fold=0).utcoffset()
    second = naive.replace(tzinfo=when.tzinfo, fold=1).utcoffset()
    if first is None or second is None or first <= second:
        return False
    return when.utcoffset() == second


def _checked(step: Callable[[type[datetime]], datetime], kind: type[datetime]) -> datetime:
    try:
        return step(kind)
    except _croniter().CroniterBadDateError:
        raise CronError("cron_expr", "the expression matches no date") from None


@lru_cache(maxsize=512)
def zone(name: str) -> ZoneInfo:
    """An IANA timezone, or CronError naming the `timezone` field."""
    if not name or len(name) > 64 or name.startswith(("/", ".")) or ".." in name:
        raise CronError("timezone", f"unknown timezone {name!r}: use an IANA name like "
                        "Europe/Berlin or UTC")
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError, OSError):
        raise CronError("timezone", f"unknown timezone {name!r}: use an IANA name like "
                        "Europe/Berlin or UTC") from None


@lru_cache(maxsize=1024)
def parse(expr: str, timezone: str = "UTC") -> Cron:
    """Validate `expr` (5 fields, or @hourly/@daily/@weekly/@monthly/@yearly) in `timezone`.

    Raises CronError whose `field` is "cron_expr" or "timezone".
    """
    tz = zone(timezone)
    if not isinstance(expr, str) or not expr.strip():
        raise CronError("cron_expr", "must not be empty; e.g. '*/5 * * * *'")
    if len(expr) > MAX_EXPR_LENGTH:
        raise CronError("cron_expr", f"longer than {MAX_EXPR_LENGTH} characters")
    text = " ".join(expr.split())
    fields = _MACROS.get(text.lower(), text)
    if fields.startswith("@"):
        known = ", ".join(sorted(_MACROS))
        raise CronError("cron_expr", f"unknown macro {text!r}: expected one of {known}")
    parts = fields.split(" ")
    if len(parts) != 5:
        raise CronError(
            "cron_expr",
            f"{expr!r} has {len(parts)} fields; expected 5 "
            "(minute hour day-of-month month day-of-week), e.g. '0 9 * * MON-FRI'",
        )
    for name, part in zip(_FIELDS, parts, strict=True):
        if _NONDETERMINISTIC.search(part):
            raise CronError("cron_expr", f"{name} field {part!r}: H and R (hashed/random) "
                            "are not supported")
    try:
        _croniter().croniter(fields, datetime(2000, 1, 1, tzinfo=tz))
    except _croniter().CroniterError as exc:
        problem = field_problem(parts) or str(exc)
        raise CronError("cron_expr", f"invalid cron expression {expr!r}: {problem}") from None
    cron = Cron(expr=expr, fields=fields, tz=tz, hour_wildcard=parts[1].startswith("*"))
    # An expression like "0 0 30 2 *" is well-formed but never fires; say so now, not at
    # the first tick of the scheduler.
    cron.next_after(datetime(2000, 1, 1, tzinfo=tz).timestamp())
    return cron


def validate(expr: str, timezone: str = "UTC") -> Cron:
    """parse(), plus the rules for an expression being saved now (see _check_items).

    Kept apart from parse() on purpose: a schedule saved before these rules (`0 23-1 * * *`,
    which croniter reads as wrapping around midnight) keeps firing as it always did; the rules
    apply when it is created, edited or previewed.
    """
    cron = parse(expr, timezone)
    for index, part in enumerate(cron.fields.split(" ")):
        _check_items(index, part)
    return cron


def _check_items(index: int, part: str) -> None:
    """What croniter lets through but classic cron refuses: ranges that run backwards (croniter
    wraps `23-1` around midnight; cron says "bad hour") and steps longer than the field, which
    can only ever match the first value (`*/1000` is `0`) and are surely a mistake."""
    name = _FIELDS[index]
    low_bound, high_bound, count = _BOUNDS[index]
    for item in part.split(","):
        m = _ITEM.fullmatch(item)
        if m is None:
            continue
        if m["high"] is not None:
            low, high = _value(index, m["low"]), _value(index, m["high"])
            if low is not None and high is not None and low > high:
                raise CronError(
                    "cron_expr", f"{name} field {part!r}: the range {m['base']} runs backwards; "
                    f"a range goes from low to high; to wrap around, give two: "
                    f"{low}-{high_bound},{low_bound}-{high}"
                )
        if m["step"] is not None and not 1 <= int(m["step"]) <= count:
            raise CronError(
                "cron_expr", f"{name} field {part!r}: the step /{m['step']} must be from 1 to "
                f"{count}"
            )


def _value(index: int, text: str) -> int | None:
    if text.isdigit():
        return int(text)
    return _NAMES[index].get(text.lower())  # an unknown name is croniter's to refuse


def preview(expr: str, timezone: str = "UTC", after: float | None = None,
            n: int = 5, *, saved: bool = False) -> list[datetime]:
    """The next `n` fire times after `after` (default: now) as datetimes in the timezone.

    For forms that show "this will run at ..." before anything is saved (the rules for saving
    apply), and, with `saved`, for a stored schedule (it is read as the scheduler reads it).
    """
    if not 1 <= n <= MAX_PREVIEW:
        raise CronError("n", f"must be between 1 and {MAX_PREVIEW}")
    cron = parse(expr, timezone) if saved else validate(expr, timezone)
    start = time.time() if after is None else after
    return [datetime.fromtimestamp(ts, cron.tz) for ts in cron.next_after(start, n)]


# -- wording: which field is wrong and why, in words a person can act on --------------------

_TO = "\N{EN DASH}"  # "0 to 23" with a dash reads as a range; a hyphen as a subtraction


def field_problem(parts: list[str]) -> str | None:
    """The first field of five whose value is out of its range, worded by field, e.g. "hour
    must be 0 to 23, got 25" (an en dash for "to"); None when every value is in range."""
    for index, (name, part) in enumerate(zip(_FIELDS, parts, strict=False)):
        lo, hi, count = _BOUNDS[index]
        known = _NAMES[index]
        for item in part.split(","):
            base, _, step = item.partition("/")
            if step and (not step.isdigit() or not 1 <= int(step) <= count):
                return f"{name} step must be 1{_TO}{count}, got {step!r}"
            for value in base.split("-") if base not in ("*", "?", "") else ():
                if value.lower() in known or (name == "day of month" and value.upper() == "L"):
                    continue
                if not value.isdigit():
                    names = " or a name" if known else ""
                    return f"{name} must be {lo}{_TO}{hi}{names}, got {value!r}"
                if not lo <= int(value) <= hi:
                    return f"{name} must be {lo}{_TO}{hi}, got {value} (out of range)"
    return None
