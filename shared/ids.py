"""Task ids: ULIDs, so ids sort by creation time and keyset pagination needs no extra column."""

from __future__ import annotations

import base64
import os
import threading
import time

_CROCKFORD = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"
# Two characters (10 bits) at a time: 13 table lookups per id instead of 26 shifts and appends.
_PAIRS = [a + b for a in _CROCKFORD for b in _CROCKFORD]
# 80 random bits are exactly 10 bytes, and base32 spells 10 bytes as 16 characters, most
# significant first: the random part of an id is the standard base32 of its bytes, re-lettered
# into Crockford's alphabet, for a whole batch at once (half the time of new_id per id).
_TO_CROCKFORD = bytes.maketrans(b"ABCDEFGHIJKLMNOPQRSTUVWXYZ234567", _CROCKFORD.encode())


def _time_part(ms: int) -> str:
    """The first 10 characters: 48 bits of milliseconds (50 bits, the top two zero)."""
    return "".join([_PAIRS[(ms >> shift) & 1023] for shift in range(40, -1, -10)])


def new_id(now: float | None = None) -> str:
    """A 26-character ULID: 48 bits of milliseconds, then 80 random bits."""
    ms = int((time.time() if now is None else now) * 1000)
    value = (ms << 80) | int.from_bytes(random_bytes(10), "big")
    pairs = _PAIRS
    return "".join([pairs[(value >> shift) & 1023] for shift in range(120, -1, -10)])


def new_ids(count: int, now: float | None = None) -> list[str]:
    """`count` ULIDs made at `now` (a batch): one time part, one read of randomness."""
    if count <= 0:
        return []
    head = _time_part(int((time.time() if now is None else now) * 1000))
    tails = base64.b32encode(random_bytes(10 * count)).translate(_TO_CROCKFORD).decode()
    return [head + tails[at:at + 16] for at in range(0, 16 * count, 16)]


def id_at(now: float) -> str:
    """The smallest id made at this time: ids >= id_at(t) were made at t or later, ids below
    it before t, so a time range of tasks is a range of ids (keyset paging needs no index)."""
    ms = max(int(now * 1000), 0)
    value = ms << 80
    return "".join([_PAIRS[(value >> shift) & 1023] for shift in range(120, -1, -10)])


# os.urandom is a system call, and on a busy event loop each one is a chance to lose the GIL to
# the database thread: read the kernel's randomness in blocks and hand it out in slices. The
# block is per thread (no lock) and dropped in a forked child, which must never repeat its
# parent's bytes.
_BLOCK = 4096
_pool = threading.local()


def random_bytes(n: int) -> bytes:
    """n bytes from os.urandom, read a block at a time."""
    block: bytes = getattr(_pool, "block", b"")
    at: int = getattr(_pool, "at", 0)
    if at + n > len(block):
        block, at = os.urandom(max(_BLOCK, n)), 0
        _pool.block = block
    _pool.at = at + n
    return block[at:at + n]


def _forget_in_child() -> None:
    global _pool
    _pool = threading.local()


os.register_at_fork(after_in_child=_forget_in_child)


def is_valid_id(text: str) -> bool:
    return len(text) == 26 and all(c in _CROCKFORD for c in text)
