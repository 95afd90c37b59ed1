"""Overview, System, and the login page."""

from __future__ import annotations

import platform
import time
from importlib import metadata
from typing import Annotated

import msgspec
from litestar import Controller, Request, get, post
from litestar.params import Parameter
from litestar.response import Response

from api.auth import token_matches
from api.dashboard import security
from api.dashboard.chart import throughput_svg
from api.dashboard.common import go, is_htmx, render, settings_of
from api.dashboard.snapshots import snapshots
from api.deps import QueueDep
from shared import dashboard_queries, migrate
from shared.dashboard_queries import QUEUED_VIEWS
from shared.schemas import STATUSES
from shared.settings import FIELDS

CHART_HOURS = (1, 3, 6)
WORKERS_WITHIN = 300.0
_SECRET_WORDS = ("token", "secret", "password", "key")


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
            "oldest": await dashboard_queries.oldest_runnable(queue.db, now),
            "workers": await dashboard_queries.recent_workers(queue.db, now, WORKERS_WITHIN),
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
            else:
                shown = _shown(value)
            field = known.get(name)
            config.append({
                "name": name, "value": shown, "env": field.env if field else "",
                "help": field.help if field else "",
            })
        return render(
            "system.html", section="system", title="System", now=queue.clock.now(),
            version=version(), python=platform.python_version(),
            storage=await dashboard_queries.storage(queue.db),
            schema_version=await queue.db.schema_version(),
            newest_schema=migrate.newest_version(), db_path=queue.db.path, config=config,
            login=bool(settings.api_token),
        )


class LoginController(Controller):
    path = "/dashboard"
    include_in_schema = False
    opt = {security.PUBLIC: True}

    @get("/login", name="dashboard-login")
    async def login_page(
        self, request: Request, next: str | None = None, expired: str | None = None
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
        throttle, client, now = security.login_throttle(request), _client(request), time.time()
        wait = throttle.retry_after(client, now)
        if wait > 0:
            return render(
                "login.html", title="Log in", next=target, status_code=429,
                headers={"Retry-After": str(int(wait) + 1)},
                error=f"Too many wrong tokens from your address; try again in {int(wait) + 1} s.",
            )
        if not token_matches(str(form.get("token", "")), token):
            throttle.failed(client, now)
            return render(
                "login.html", title="Log in", next=target, status_code=401,
                error="That is not the API token this server was started with.",
            )
        response = go(request, target)
        response.set_cookie(security.session_cookie(request, security.make_session(token)))
        return response

    @post("/logout", status_code=303)
    async def logout(self, request: Request) -> Response:
        response = go(request, security.LOGIN_PATH)
        response.set_cookie(security.session_cookie(request, "", max_age=0))
        return response


def _client(request: Request) -> str:
    return request.client.host if request.client else "unknown"
