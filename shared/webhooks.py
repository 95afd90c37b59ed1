"""Webhooks' policy: which callback URLs are accepted, how a delivery is signed, how long to
wait between tries, and the shape a delivery is shown in. docs/webhooks.md is the contract.

The data lives behind the Store (shared/store/base.py WebhookStore): a delivery row is written
by the transaction that finishes a task; worker/webhooks.py sends it.
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import random
from datetime import datetime
from typing import Any, Literal
from urllib.parse import urlsplit

import msgspec

from shared.errors import InvalidTask
from shared.policy import (
    METADATA_NETWORKS,
    HostRule,
    HttpPolicy,
    PolicyError,
    normalize_host,
    parse_address,
)
from shared.schemas import Status, to_datetime
from shared.settings import Settings

FIELD = "callback_url"
# The headers a receiver reads (docs/webhooks.md).
SIGNATURE_HEADER = "X-LocalFlow-Signature"
TIMESTAMP_HEADER = "X-LocalFlow-Timestamp"
DELIVERY_HEADER = "X-LocalFlow-Delivery"
EVENT_HEADER = "X-LocalFlow-Event"
# A receiver's answer is read this far and dropped: only its status code matters, and a
# receiver that streams for ever must not hold a deliverer.
MAX_RESPONSE_READ = 64 * 1024
# Beyond webhook_timeout: how long a claimed delivery stays leased, so a deliverer that is
# slow to write its outcome back is not overtaken; one that died is after this.
LEASE_MARGIN = 30.0

DeliveryState = Literal["pending", "delivered", "failed"]


class DeliveryTry(msgspec.Struct, kw_only=True):
    """One POST of a delivery, as recorded."""

    at: datetime  # when it was sent
    duration: float  # seconds until the answer (or the error)
    status_code: int | None  # the receiver's HTTP status; None when there was no answer
    error: str | None  # why it did not count as delivered (None when it did)


class Delivery(msgspec.Struct, kw_only=True):
    """GET /api/tasks/{id}/deliveries: one webhook delivery of a task and every try of it."""

    id: str  # also sent as X-LocalFlow-Delivery: the receiver's key for dropping repeats
    url: str
    task_status: Status  # the final state it reports
    state: DeliveryState  # pending (tries left), delivered (a 2xx came back), failed (gave up)
    tries: int
    next_try_at: datetime | None  # when pending: the next try is not before this
    created_at: datetime  # the moment the task finished (the delivery was recorded)
    finished_at: datetime | None  # delivered or given up
    history: list[DeliveryTry]


def delivery_view(row: dict[str, Any]) -> Delivery:
    """A store's delivery dict (WebhookStore.deliveries) as the API shows it."""
    return Delivery(
        id=row["id"], url=row["url"], task_status=row["task_status"], state=row["state"],
        tries=row["tries"], next_try_at=to_datetime(row["next_try_at"]),
        created_at=to_datetime(row["created_at"]),  # type: ignore[arg-type]
        finished_at=to_datetime(row["finished_at"]),
        history=[
            DeliveryTry(at=to_datetime(t["at"]), duration=t["duration"],  # type: ignore[arg-type]
                        status_code=t.get("status_code"), error=t.get("error"))
            for t in row["history"]
        ],
    )


def webhook_policy(http: HttpPolicy) -> HttpPolicy:
    """The http tasks' host policy, with cloud metadata addresses denied even where the
    allowlist names them: a callback URL is chosen by whoever submits, and the body it gets
    is LocalFlow's, so there is no reason to ever send one there. No redirects followed."""
    deny = HostRule(http.deny.names, http.deny.suffixes, http.deny.networks + METADATA_NETWORKS)
    return HttpPolicy(allow=http.allow, deny=deny, max_redirects=0,
                      max_response_bytes=MAX_RESPONSE_READ)


def check_callback_url(url: str, http: HttpPolicy, settings: Settings) -> None:
    """The submit-time check (Queue.prepare); raises InvalidTask naming callback_url."""
    if not settings.webhook_secret:
        raise InvalidTask(
            f"{FIELD}: webhooks are off on this server: LOCALFLOW_WEBHOOK_SECRET is not set, "
            "and deliveries are never sent unsigned (docs/webhooks.md)", FIELD,
        )
    try:
        host = urlsplit(url).hostname
    except ValueError as exc:
        raise InvalidTask(f"{FIELD}: not a valid URL: {exc}", FIELD) from None
    ip = parse_address(normalize_host(host)) if host else None
    if ip is not None and _is_metadata(ip):
        raise InvalidTask(
            f"{FIELD}: {ip} is a link-local / cloud metadata address; webhooks are never "
            "sent there", FIELD,
        )
    try:
        webhook_policy(http).check_url(url, field=FIELD)
    except PolicyError as exc:
        raise InvalidTask(str(exc), FIELD) from None


def _is_metadata(ip: ipaddress.IPv4Address | ipaddress.IPv6Address) -> bool:
    return any(ip.version == n.version and ip in n for n in METADATA_NETWORKS)


def sign(secret: str, timestamp: int, body: bytes) -> str:
    """The X-LocalFlow-Signature value: sha256=<hex HMAC-SHA256 of "<timestamp>.<body>">,
    keyed by the secret. The timestamp is inside what is signed, so a receiver that refuses
    old timestamps refuses replays of a captured delivery."""
    mac = hmac.new(secret.encode(), str(timestamp).encode() + b"." + body, hashlib.sha256)
    return "sha256=" + mac.hexdigest()


def verify(secret: str, timestamp: str, body: bytes, signature: str) -> bool:
    """What a receiver does (docs/webhooks.md shows the same in a few lines)."""
    if not timestamp.isdigit():
        return False
    return hmac.compare_digest(sign(secret, int(timestamp), body), signature)


def headers(secret: str, timestamp: int, body: bytes, delivery_id: str,
            task_status: str) -> dict[str, str]:
    return {
        "Content-Type": "application/json",
        "User-Agent": "LocalFlow-Webhook",
        SIGNATURE_HEADER: sign(secret, timestamp, body),
        TIMESTAMP_HEADER: str(timestamp),
        DELIVERY_HEADER: delivery_id,
        EVENT_HEADER: f"task.{task_status}",
    }


def retry_delay(tries: int, settings: Settings) -> float:
    """Seconds to wait after the `tries`-th failed try: webhook_retry_base doubled for each
    try before it, capped at webhook_retry_max, with +-25% jitter so a receiver coming back
    from an outage is not met by every delivery at once."""
    base = min(settings.webhook_retry_base * 2 ** (tries - 1), settings.webhook_retry_max)
    return base * random.uniform(0.75, 1.25)  # noqa: S311 - jitter, not secrecy
