"""The `http` handler: one request through httpx; a non-2xx answer is a failed attempt.

The host policy (shared/policy.py) is enforced where it cannot be stepped around: at connect
time, on the address actually dialled. A name is resolved once, each address checked, and the
connection made to that checked address (TLS still verifies the certificate for the name), so
DNS that answers differently on a second lookup (rebinding) gains nothing. Redirects are followed
here, one hop at a time up to LOCALFLOW_HTTP_MAX_REDIRECTS, each URL checked before it is sent
and each connection checked as it is made. The body is read up to
LOCALFLOW_HTTP_MAX_RESPONSE_BYTES (decompressed); more fails the attempt. Only the first
`output_limit` bytes are kept in the result.
"""

from __future__ import annotations

import asyncio
import socket
import time
from typing import Any

import httpcore
import httpx
from msgspec import UNSET

from shared.policy import HttpPolicy, PolicyError, parse_address
from shared.schemas import HttpPayload
from worker.handlers.base import HandlerContext, TaskFailed, TaskTimedOut, policy_of

_clients: dict[HttpPolicy, httpx.AsyncClient] = {}


class GuardedBackend(httpcore.AsyncNetworkBackend):
    """httpcore's network backend, refusing to connect where the policy says no."""

    def __init__(self, policy: HttpPolicy, inner: httpcore.AsyncNetworkBackend) -> None:
        self.policy = policy
        self.inner = inner

    async def connect_tcp(
        self, host: str, port: int, timeout: float | None = None,  # noqa: ASYNC109 - httpcore's
        local_address: str | None = None, socket_options: Any = None,
    ) -> httpcore.AsyncNetworkStream:
        addresses = await _resolve(host, port)
        refused: list[str] = []
        last_error: Exception | None = None
        for ip in addresses:
            reason = self.policy.address_denied(host, ip)
            if reason:
                refused.append(reason)
                continue
            try:
                return await self.inner.connect_tcp(
                    str(ip), port, timeout=timeout, local_address=local_address,
                    socket_options=socket_options,
                )
            except (httpcore.ConnectError, httpcore.ConnectTimeout) as exc:
                last_error = exc
        if last_error is not None:
            raise last_error
        raise PolicyError(refused[0] if refused else f"{host} has no address")

    async def connect_unix_socket(self, *args: Any, **kwargs: Any) -> httpcore.AsyncNetworkStream:
        raise PolicyError("unix sockets are not reachable from http tasks")

    async def sleep(self, seconds: float) -> None:
        await self.inner.sleep(seconds)


async def _resolve(host: str, port: int) -> list[Any]:
    host = host.strip("[]")
    literal = parse_address(host)
    if literal is not None:
        return [literal]
    try:
        infos = await asyncio.get_running_loop().getaddrinfo(
            host, port, type=socket.SOCK_STREAM
        )
    except socket.gaierror as exc:
        raise httpcore.ConnectError(f"cannot resolve {host}: {exc.strerror}") from None
    seen: list[Any] = []
    for *_, sockaddr in infos:
        ip = parse_address(sockaddr[0].split("%")[0])
        if ip is not None and ip not in seen:
            seen.append(ip)
    return seen


def client(policy: HttpPolicy) -> httpx.AsyncClient:
    # One pooled client per policy (in practice one per worker process): connection reuse
    # matters for many small calls.
    existing = _clients.get(policy)
    if existing is not None and not existing.is_closed:
        return existing
    transport = httpx.AsyncHTTPTransport(trust_env=False)
    pool = getattr(transport, "_pool", None)
    if not isinstance(pool, httpcore.AsyncConnectionPool) or not hasattr(
        pool, "_network_backend"
    ):
        # Fail closed: without the hook no http task could be held to the policy.
        raise RuntimeError("this httpx/httpcore version cannot enforce the http host policy")
    pool._network_backend = GuardedBackend(policy, pool._network_backend)
    made = httpx.AsyncClient(transport=transport, follow_redirects=False, trust_env=False)
    _clients[policy] = made
    return made


async def close_client() -> None:
    clients = list(_clients.values())
    _clients.clear()
    for c in clients:
        await c.aclose()


async def run_http(payload: HttpPayload, ctx: HandlerContext) -> dict[str, Any]:
    policy = policy_of(ctx).http
    timeout = min(payload.timeout, ctx.timeout)
    started = time.monotonic()
    kwargs: dict[str, Any] = {"headers": payload.headers, "timeout": timeout}
    if payload.json is not UNSET:
        kwargs["json"] = payload.json
    elif payload.body is not None:
        kwargs["content"] = payload.body.encode()
    http = client(policy)
    request = http.build_request(payload.method, payload.url, **kwargs)
    redirects: list[str] = []
    try:
        # One deadline for the whole exchange: every hop and the body.
        async with asyncio.timeout(timeout):
            while True:
                policy.check_url(str(request.url), field="url")
                response = await http.send(request, stream=True)
                if response.next_request is None:
                    break
                await response.aclose()
                if len(redirects) >= policy.max_redirects:
                    raise TaskFailed(
                        f"{payload.method} {payload.url}: more than {policy.max_redirects} "
                        "redirects (LOCALFLOW_HTTP_MAX_REDIRECTS)"
                    )
                request = response.next_request
                redirects.append(str(request.url))
            try:
                body, size = await _read_capped(
                    response, ctx.output_limit, policy.max_response_bytes
                )
            finally:
                await response.aclose()
    except PolicyError as exc:
        hop = f" (redirected to {redirects[-1]})" if redirects else ""
        raise TaskFailed(f"refused by policy{hop}: {exc}", permanent=True) from None
    except (TimeoutError, httpx.TimeoutException):
        raise TaskTimedOut(
            f"{payload.method} {payload.url} timed out after {timeout:g}s"
        ) from None
    except httpx.HTTPError as exc:
        raise TaskFailed(f"{payload.method} {payload.url} failed: {exc!r}") from None
    result: dict[str, Any] = {
        "status_code": response.status_code,
        "latency_ms": round((time.monotonic() - started) * 1000, 1),
        "headers": {k: v for k, v in response.headers.items() if k.lower() == "content-type"},
        "body": body,
        "bytes": size,
    }
    if redirects:
        result["redirects"] = redirects
    if not response.is_success:
        raise TaskFailed(
            f"{payload.method} {payload.url} answered {response.status_code} "
            f"{response.reason_phrase}",
            result,
        )
    return result


async def _read_capped(response: httpx.Response, keep: int, cap: int) -> tuple[str, int]:
    """Read at most `cap` bytes of body (failing beyond), keeping the first `keep` of them."""
    declared = response.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > cap:
        raise TaskFailed(
            f"response body of {declared} bytes exceeds the {cap}-byte limit "
            "(LOCALFLOW_HTTP_MAX_RESPONSE_BYTES)"
        )
    head = bytearray()
    size = 0
    async for chunk in response.aiter_bytes():
        size += len(chunk)
        if size > cap:
            raise TaskFailed(
                f"response body exceeds the {cap}-byte limit (LOCALFLOW_HTTP_MAX_RESPONSE_BYTES)"
            )
        if len(head) < keep:
            head += chunk[: keep - len(head)]
    text = bytes(head).decode("utf-8", errors="replace")
    if size > keep:
        text += f"\n... [{size - keep} more bytes not kept]"
    return text, size
