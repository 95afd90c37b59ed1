"""Task ids: ULIDs, so ids sort by creation time and keyset pagination needs no extra column."""

from __future__ import annotations

import os
import time

_CROCKFORD = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"


def new_id(now: float | None = None) -> str:
    """A 26-character ULID: 48 bits of milliseconds, then 80 random bits."""
    ms = int((time.time() if now is None else now) * 1000)
    value = (ms << 80) | int.from_bytes(os.urandom(10), "big")
    chars = []
    for _ in range(26):
        chars.append(_CROCKFORD[value & 31])
        value >>= 5
    return "".join(reversed(chars))


def is_valid_id(text: str) -> bool:
    return len(text) == 26 and all(c in _CROCKFORD for c in text)
