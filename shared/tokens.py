"""Bearer tokens: the one comparison, the one answer to a request, and the one throttle.

Every process that checks a token (the API and dashboard in api/auth.py, the worker's own
/metrics in worker/health_server.py) goes through `authenticate`, so a client meets the same
behaviour everywhere (RFC 6750 section 3):

- no bearer credentials: 401, `WWW-Authenticate: Bearer realm="localflow"` (no error code:
  the client did not try, RFC 6750 3.1);
- a wrong, empty or malformed bearer token: 401, `WWW-Authenticate: Bearer
  realm="localflow", error="invalid_token"`. (RFC 6750 allows 400 invalid_request for a
  malformed header; one answer for every unusable token keeps clients simple and tells an
  attacker nothing about why.)
- too many wrong tokens from one client address: 429 with `Retry-After`.

The right token is compared first and always accepted, throttled address or not: anybody on
the same address (every local process shares 127.0.0.1) could otherwise lock the right user
out by failing on purpose. The throttle therefore does not stop a patient guesser that keeps
going through 429s; what makes guessing hopeless is the token's strength, which
`weakness` enforces at start-up (16 characters at least; generated tokens have 43).
"""

from __future__ import annotations

import hashlib
import hmac
from collections import OrderedDict, deque
from dataclasses import dataclass, field

REALM = "localflow"
MIN_TOKEN_LENGTH = 16
# Wrong tokens one client address may send in WINDOW seconds before it gets 429s.
FAILURE_LIMIT = 10
FAILURE_WINDOW = 60.0
MAX_CLIENTS = 10_000  # addresses remembered; beyond, the one failing longest ago is forgotten


def _digest(text: str) -> bytes:
    return hashlib.sha256(text.encode("utf-8", "surrogateescape")).digest()


def token_matches(given: str, expected: str) -> bool:
    """The only token comparison in LocalFlow: constant time in the content and the length
    of both sides (compare_digest over SHA-256 digests)."""
    return hmac.compare_digest(_digest(given), _digest(expected))


def weakness(token: str) -> str | None:
    """Why `token` is too weak to protect a server, or None when it is fine."""
    if any(c.isspace() for c in token):
        return "contains whitespace (a copy-paste accident, and clients send it differently)"
    if len(token) < MIN_TOKEN_LENGTH:
        return f"is {len(token)} characters long; use at least {MIN_TOKEN_LENGTH}"
    return None


def bearer_of(authorization: str | None) -> str | None:
    """The token of an `Authorization: Bearer <token>` header; "" when that header is
    malformed (no token, or more than one word); None when no bearer credentials were sent."""
    if authorization is None:
        return None
    scheme, _, rest = authorization.strip().partition(" ")
    if scheme.lower() != "bearer":
        return None  # Basic or anything else: no bearer credentials were offered
    rest = rest.strip()
    return "" if not rest or any(c.isspace() for c in rest) else rest


class FailureThrottle:
    """Wrong tokens per client address: at most `limit` in any `window` seconds.

    Bounded memory: `limit` timestamps for each of at most `max_clients` addresses. Every
    failure counts, also those answered 429, so a client that keeps guessing stays blocked.
    """

    def __init__(
        self, limit: int = FAILURE_LIMIT, window: float = FAILURE_WINDOW,
        max_clients: int = MAX_CLIENTS,
    ) -> None:
        self.limit, self.window, self.max_clients = limit, window, max_clients
        self._failures: OrderedDict[str, deque[float]] = OrderedDict()

    def retry_after(self, client: str, now: float) -> float:
        """Seconds until `client` may try again; 0 when it may now."""
        recent = self._failures.get(client)
        if recent is None or len(recent) < self.limit:
            return 0.0
        return max(0.0, self.window - (now - recent[0]))

    def failed(self, client: str, now: float) -> None:
        recent = self._failures.pop(client, None)
        if recent is None:
            recent = deque(maxlen=self.limit)
            while len(self._failures) >= self.max_clients:
                self._failures.popitem(last=False)
        recent.append(now)
        self._failures[client] = recent  # most recent failure last: evicted last


@dataclass(frozen=True)
class Denial:
    """Why a request may not proceed, as every LocalFlow endpoint answers it."""

    status: int
    detail: str
    headers: dict[str, str] = field(default_factory=dict)


def challenge(error: str | None = None) -> dict[str, str]:
    value = f'Bearer realm="{REALM}"' + (f', error="{error}"' if error else "")
    return {"WWW-Authenticate": value}


MISSING = Denial(
    401, "authentication required: send Authorization: Bearer <token>", challenge()
)


def authenticate(
    authorization: str | None, expected: str, client: str, throttle: FailureThrottle,
    now: float,
) -> Denial | None:
    """None when `authorization` carries the expected bearer token; else the answer to give.

    `authorization` None (or a non-bearer scheme) is MISSING; callers that accept other
    credentials (a dashboard session) check those before giving that answer."""
    given = bearer_of(authorization)
    if given is None:
        return MISSING
    if given and token_matches(given, expected):
        return None
    return refuse(client, throttle, now)


def refuse(client: str, throttle: FailureThrottle, now: float) -> Denial:
    """Count a wrong token from `client`: 401 invalid_token, or 429 once it sent too many."""
    wait = throttle.retry_after(client, now)
    throttle.failed(client, now)
    if wait > 0:
        seconds = int(wait) + 1
        return Denial(
            429, f"too many wrong tokens from your address; try again in {seconds} s",
            {"Retry-After": str(seconds)},
        )
    return Denial(
        401, "the bearer token is not valid for this server", challenge("invalid_token")
    )
