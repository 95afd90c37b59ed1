"""The `http` handler: one request through httpx; a non-2xx answer is a failed attempt."""

from __future__ import annotations

import time
from typing import Any

import httpx
from msgspec import UNSET

from shared.schemas import HttpPayload
from worker.handlers.base import HandlerContext, TaskFailed, clip

_client: httpx.AsyncClient | None = None


def client() -> httpx.AsyncClient:
    # One pooled client per worker process: connection reuse matters for many small calls.
    global _client
    if _client is None or _client.is_closed:
        _client = httpx.AsyncClient(follow_redirects=False, trust_env=False)
    return _client


async def close_client() -> None:
    global _client
    if _client is not None:
        await _client.aclose()
        _client = None


async def run_http(payload: HttpPayload, ctx: HandlerContext) -> dict[str, Any]:
    timeout = min(payload.timeout, ctx.timeout)
    started = time.monotonic()
    kwargs: dict[str, Any] = {"headers": payload.headers, "timeout": timeout}
    if payload.json is not UNSET:
        kwargs["json"] = payload.json
    elif payload.body is not None:
        kwargs["content"] = payload.body.encode()
    try:
        async with client().stream(payload.method, payload.url, **kwargs) as response:
            body = await _read_bounded(response, ctx.output_limit)
    except httpx.TimeoutException:
        raise TaskFailed(f"{payload.method} {payload.url} timed out after {timeout:g}s") from None
    except httpx.HTTPError as exc:
        raise TaskFailed(f"{payload.method} {payload.url} failed: {exc!r}") from None
    result = {
        "status_code": response.status_code,
        "latency_ms": round((time.monotonic() - started) * 1000, 1),
        "headers": {k: v for k, v in response.headers.items() if k.lower() == "content-type"},
        "body": body,
    }
    if not response.is_success:
        raise TaskFailed(
            f"{payload.method} {payload.url} answered {response.status_code} "
            f"{response.reason_phrase}",
            result,
        )
    return result


async def _read_bounded(response: httpx.Response, limit: int) -> str:
    """Keep at most `limit` bytes of the body, and stop reading there."""
    data = b""
    async for chunk in response.aiter_bytes():
        data += chunk
        if len(data) > limit:
            return clip(data, limit)
    return clip(data, limit)
