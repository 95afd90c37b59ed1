"""The one way LocalFlow compares a secret it was given with the one it expects."""

from __future__ import annotations

import hashlib
import hmac


def _digest(text: str) -> bytes:
    return hashlib.sha256(text.encode("utf-8", "surrogateescape")).digest()


def token_matches(given: str, expected: str) -> bool:
    """Constant time in both the content and the length of the given token: both sides are
    hashed first, so compare_digest always compares 32 bytes with 32 bytes."""
    return hmac.compare_digest(_digest(given), _digest(expected))
