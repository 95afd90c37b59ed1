"""Reading a JSON document a client sent: strictly, within bounds, with errors a person can act on.

What is refused, and why (docs/security.md, "Inputs"):

- bytes that are not UTF-8 (RFC 8259 8.1): 400;
- anything that is not one JSON text (truncated, NaN, Infinity, trailing garbage): 400;
- numbers beyond what a field can hold: 400 (msgspec) or 422 (out of the field's range);
- nesting deeper than MAX_DEPTH: 400. Nothing LocalFlow takes is deeper than a few levels, and
  every later step (validation, storage, the dashboard's rendering) would otherwise have to be
  safe against unbounded recursion;
- a key repeated in one object: 400. Parsers disagree on which copy wins, so a body that one
  reader (a proxy, a log) sees as `"type": "shell"` must not run as something else here;
- values of the wrong kind: 422 naming the field. No coercion: `"priority": "1"` is a string,
  not a number, and `true` is not 1 (msgspec's strict mode).

A `field` is named as a person writes it: `priority`, `payload.env`, `tasks[3].priority`.
"""

from __future__ import annotations

import json
import re
from typing import Any

import msgspec

MAX_DEPTH = 64  # objects and arrays inside one another, the outermost counting as 1

_ANY = msgspec.json.Decoder()


class BodyError(ValueError):
    """A body refused: `status` 400 (not a JSON text we read) or 422 (a value that does not
    fit); `field` names the value for 422, None when it is the body as a whole."""

    def __init__(self, status: int, message: str, field: str | None = None) -> None:
        super().__init__(f"{field}: {message}" if field else message)
        self.status = status
        self.field = field
        self.message = message  # without the field


def decode(body: bytes, into: Any = Any) -> Any:
    """The value of `body`, converted strictly into the type `into`; or BodyError."""
    if not body.strip():
        raise BodyError(400, "the request body is empty: send a JSON object")
    try:
        body.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise BodyError(
            400, f"the body is not valid UTF-8 (byte {exc.start}): send JSON encoded as UTF-8"
        ) from None
    try:
        value = _ANY.decode(body)
    except RecursionError:
        raise _too_deep() from None
    except msgspec.DecodeError as exc:
        raise BodyError(400, f"the body is not valid JSON: {exc}") from None
    _check_shape(body, value)
    if into is Any:
        return value
    try:
        return msgspec.convert(value, into, strict=True)
    except msgspec.ValidationError as exc:
        field, message = describe(exc)
        raise BodyError(422, message, field) from None


def _too_deep() -> BodyError:
    return BodyError(400, f"the JSON is nested more than {MAX_DEPTH} levels deep")


class _Duplicate(Exception):
    pass


def _unique(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    found = dict(pairs)
    if len(found) != len(pairs):
        seen: set[str] = set()
        for key, _ in pairs:
            if key in seen:
                raise _Duplicate(key)
            seen.add(key)
    return found


# A JSON string, escapes included: what is left of a valid document without them holds one `:`
# per object member and nothing else. (Written as runs of plain characters between escapes,
# which the regular expression engine steps through far faster than one character at a time.)
_STRING = re.compile(rb'"[^"\\]*(?:\\.[^"\\]*)*"', re.S)
_CONTAINERS = (dict, list)


def _members(value: Any) -> int:
    """Members of every object in a decoded document (each dict's keys, nested ones too);
    _too_deep() if containers nest more than MAX_DEPTH levels. One walk, a level at a time,
    for both (no recursion, no (item, depth) pairs)."""
    count = 0
    depth = 1
    level = [value]
    while level:
        below: list[Any] = []
        push = below.append
        for item in level:
            if type(item) is dict:
                count += len(item)
                item = item.values()
            for child in item:
                if type(child) in _CONTAINERS:
                    push(child)
        if below:
            depth += 1
            if depth > MAX_DEPTH:
                raise _too_deep()
        level = below
    return count


def _check_shape(body: bytes, value: Any) -> None:
    """Nesting within MAX_DEPTH and no key repeated in one object."""
    if not isinstance(value, _CONTAINERS):
        return
    # A document with fewer brackets than the limit cannot be deeper than it, and a repeated
    # key needs two members in one object, hence a comma: the common small body costs two
    # byte counts. (Brackets inside strings only make the count larger.)
    if b"," not in body and body.count(b"[") + body.count(b"{") <= MAX_DEPTH:
        return
    members = _members(value)
    if b"," not in body:
        return
    # A repeated key leaves its object with fewer keys than the body has members. Every member
    # has a `:` of its own in the body, so when the body holds no more colons than the decoded
    # document has members, none was repeated: no string needs stripping (a batch of shell
    # tasks). Otherwise count the colons outside strings, and only a body that falls short is
    # read again, to name the key.
    if body.count(b":") == members or _STRING.sub(b"", body).count(b":") == members:
        return
    try:
        json.loads(body, object_pairs_hook=_unique)
    except _Duplicate as exc:
        raise BodyError(
            400, f"duplicate key {exc.args[0]!r} in one JSON object: give each key once"
        ) from None
    except ValueError:
        pass  # msgspec read it already; any other disagreement is not about keys


_AT = re.compile(r"^(?P<message>.*?)(?: - at `\$(?P<path>[^`]*)`)?$", re.S)
_NAMED = re.compile(r"^Object (?:missing required|contains unknown) field `(?P<name>[^`]+)`")
# Our own checks (__post_init__) start their message with the field they are about.
_PREFIX = re.compile(r"^(?P<name>[A-Za-z_][A-Za-z0-9_]*(?:\[\d+\])*): ")


def describe(exc: msgspec.ValidationError, prefix: str = "") -> tuple[str | None, str]:
    """(field, message) of a msgspec error: "Expected `int`, got `str` - at `$.tasks[3].priority`"
    -> ("tasks[3].priority", "Expected `int`, got `str`"). `prefix` is where the converted value
    sits in the request ("payload")."""
    match = _AT.match(str(exc))
    assert match is not None  # the pattern matches any text
    # msgspec writes a dict's member as `[...]`: name the dict ("payload.env").
    message, path = match["message"], (match["path"] or "").replace("[...]", "").lstrip(".")
    if named := _NAMED.match(message):
        path = join(path, named["name"])
    elif own := _PREFIX.match(message):
        path = join(path, own["name"])
        message = message[own.end():]
    field = join(prefix, path)
    return field or None, message


def join(*parts: str) -> str:
    """"tasks[3]", "priority" -> "tasks[3].priority"; "payload", "[0]" -> "payload[0]"."""
    out = ""
    for part in parts:
        if not part:
            continue
        out = part if not out else out + (part if part.startswith("[") else "." + part)
    return out
