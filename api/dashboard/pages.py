"""Overview, System, and the login page."""

from __future__ import annotations

import platform
import time
from importlib import metadata
from typing import Annotated

import msgspec
from litestar import Controller, Request, get, post
from litestar.params import FromQuery, Parameter
from litestar.response import Response

from api.auth import client_address, throttle_of, token_matches
from api.dashboard import security
from api.dashboard.chart import throughput_svg
from api.dashboard.common import go, is_htmx, render, settings_of
from api.dashboard.formatting import exact_span, size, span
from api.dashboard.snapshots import snapshots
from api.deps import QueueDep
from shared.queue import Queue
from shared.schemas import QUEUED_VIEWS, STATUSES
from shared.settings import BYTE_FIELDS, DURATION_FIELDS, FIELDS, Field, Settings
from shared.store import redact
from shared.store.base import StorageInfo
from shared.tokens import refuse

CHART_HOURS = (1, 3, 6)
# The retention settings the system page explains, in the order it lists them.
RETENTION_SETTINGS = ("retain_succeeded", "retain_failed", "retain_cancelled", "prune_interval")
PRUNED_SAMPLE = "localflow_tasks_pruned_total"
WORKERS_WITHIN = 300.0
_SECRET_WORDS = ("token", "secret", "password", "key")
# Settings with no flag or variable (fixed in this version): what each one means, so every
# row of the System page says it. Those with a variable take their meaning from FIELDS.
_BUILT_IN = {
    "retry_base": "backoff before the first retry; it doubles with each attempt after that",
    "retry_max": "longest backoff between two attempts",
    "default_timeout": "an attempt's time limit when the task sets none",
    "default_max_attempts": "attempts a task gets when it sets none",
    "max_payload_bytes": "largest task payload the API accepts",
    "output_limit": "bytes kept of each output stream (stdout, stderr) or response body",
}
_BUILT_IN_DURATIONS = frozenset({"retry_base", "retry_max", "default_timeout"})
_BUILT_IN_BYTES = frozenset({"max_payload_bytes", "output_limit"})


def version() -> str:
    try:
        return metadata.version("localflow")
    except metadata.PackageNotFoundError:  # running from a source tree that was never installed
        return "0.1.0 (source)"


def _shown(value: object) -> str:
    """A setting as a person would type it: true/false, comma lists, "—" for nothing."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, list | tuple | set | frozenset):
        return ", ".join(str(v) for v in value) or "— (any)"
    if value is None or value == "":
        return "—"
    return str(value)


class OverviewController(Controller):
    include_in_schema = False

    @get(["/", "/dashboard", "/dashboard/overview"], name="dashboard-overview")
    async def overview(
        self, request: Request, queue: QueueDep,
        hours: Annotated[int, Parameter(ge=1, le=6)] = 3,
    ) -> Response:
        """The page, or (for htmx polls) just its live part."""
        hours = hours if hours in CHART_HOURS else 3
        now = queue.clock.now()
        snap = snapshots(request)
        counts = await snap.counts(queue)
        context = {
            "now": now, "counts": counts, "statuses": STATUSES, "views": QUEUED_VIEWS,
            "hours": hours,
            "chart_hours": CHART_HOURS,
            "throughput": (data := await snap.throughput(queue, hours)),
            "chart": throughput_svg(data) if data else None,
            "oldest": await queue.store.oldest_runnable(now),
            "workers": await queue.store.recent_workers(now, WORKERS_WITHIN),
            "held": await queue.store.running_task_ids(),
            "workers_within": WORKERS_WITHIN,
        }
        if is_htmx(request):
            return render("_overview.html", **context)
        return render("overview.html", section="overview", title="Overview", **context)

    @get("/dashboard/system", name="dashboard-system")
    async def system(self, request: Request, queue: QueueDep) -> Response:
        settings = settings_of(request)
        config = []
        known = {f.name: f for f in FIELDS}
        for name, value in msgspec.structs.asdict(settings).items():
            if any(word in name for word in _SECRET_WORDS):
                shown = "set (hidden)" if value else "not set"
            elif name == "db":
                shown = redact(value)  # a PostgreSQL URL may carry a password
            elif (name in DURATION_FIELDS or name in _BUILT_IN_DURATIONS) and isinstance(
                value, int | float
            ):
                # Retention's 0 means "keep for ever" (shared/settings.py _retention).
                forever = name.startswith("retain_") and not value
                shown = "forever (never pruned)" if forever else exact_span(float(value))
            elif (name in BYTE_FIELDS or name in _BUILT_IN_BYTES) and isinstance(value, int):
                shown = f"{size(value)} ({value:,} bytes)"
            else:
                shown = _shown(value)
            field = known.get(name)
            config.append({
                "name": name, "value": shown, "env": field.env if field else None,
                "help": field.help if field else _BUILT_IN.get(name, ""),
            })
        # The database's size and schema move slowly, and on PostgreSQL the size is a stat of
        # every file of the database (~10 ms at a million tasks): a copy at most 5 s old.
        storage, schema_version = await snapshots(request).value(
            "storage", lambda: _storage(queue))
        return render(
            "system.html", section="system", title="System", now=queue.clock.now(),
            version=version(), python=platform.python_version(),
            storage=storage, database_bytes=sum(storage.sizes.values()),
            retention=_retention(settings, known), pruned=_pruned(request),
            schema_version=schema_version,
            newest_schema=queue.store.newest_schema_version(), config=config,
            login=bool(settings.api_token),
        )


async def _storage(queue: Queue) -> tuple[StorageInfo, int]:
    return await queue.store.storage(), await queue.store.schema_version()


def _retention(settings: Settings, known: dict[str, Field]) -> list[dict[str, str]]:
    """Each retention setting with its value in words, its variable and its meaning."""
    rows = []
    for name in RETENTION_SETTINGS:
        seconds = getattr(settings, name)
        kept = name != "prune_interval" and seconds <= 0
        rows.append({"name": name, "value": "forever (never pruned)" if kept else span(seconds),
                     "env": known[name].env, "help": known[name].help})
    return rows


def _pruned(request: Request) -> dict[str, int] | None:
    """Finished tasks this process's pruner deleted since it started, by status: the
    worker's metrics, which `serve` folds into this app's /metrics. None when no worker runs
    in this process (`localflow api`): each worker's /metrics has its own count."""
    registry = request.app.state.metrics.registry
    counts = {status: registry.get_sample_value(PRUNED_SAMPLE, {"status": status})
              for status in ("succeeded", "failed", "cancelled")}
    if all(n is None for n in counts.values()):
        return None
    return {status: int(n or 0) for status, n in counts.items()}


class LoginController(Controller):
    path = "/dashboard"
    include_in_schema = False
    opt = {security.PUBLIC: True}

    @get("/login", name="dashboard-login")
    async def login_page(
        self, request: Request, next: FromQuery[str | None] = None,
        expired: FromQuery[str | None] = None,
    ) -> Response:
        if security.is_logged_in(request, settings_of(request)):
            return go(request, security.safe_next(next))
        return render("login.html", title="Log in", next=security.safe_next(next), error=None,
                      expired=bool(expired))

    @post("/login", status_code=303)
    async def login(self, request: Request) -> Response:
        form = await request.form()
        target = security.safe_next(form.get("next"))
        token = settings_of(request).api_token
        if not token:
            return go(request, target)
        # One count of wrong tokens per address for this form and the API's bearer check; the
        # right token is compared first and always let in (shared/tokens.py says why).
        typed = str(form.get("token", ""))
        if not token_matches(typed, token):
            throttle = throttle_of(request.app.state)
            denial = refuse(client_address(request), throttle, time.monotonic())
            if denial.status == 429:
                return render(
                    "login.html", title="Log in", next=target, status_code=429,
                    headers={"Retry-After": denial.headers["Retry-After"]},
                    error="Too many wrong tokens from your address; try again in "
                    f"{denial.headers['Retry-After']} s.",
                )
            return render(
                "login.html", title="Log in", next=target, status_code=401,
                error="That is not the API token this server was started with.",
            )
        response = go(request, target)
        session = security.sessions_of(request.app.state).create()
        response.set_cookie(security.session_cookie(request, session))
        return response

    @post("/logout", status_code=303)
    async def logout(self, request: Request) -> Response:
        # Ends the session on the server: a copy of the cookie is worth nothing from now on.
        security.sessions_of(request.app.state).revoke(request.cookies.get(security.SESSION_COOKIE))
        response = go(request, security.LOGIN_PATH)
        response.set_cookie(security.session_cookie(request, "", max_age=0))
        return response

