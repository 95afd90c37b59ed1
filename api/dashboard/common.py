"""Small helpers every dashboard page uses: rendering, htmx detection, navigation."""

from __future__ import annotations

from typing import Any

from litestar import Request
from litestar.response import Redirect, Response, Template

from shared.settings import Settings

NAV = (
    ("overview", "Overview", "/dashboard"),
    ("tasks", "Tasks", "/dashboard/tasks"),
    ("submit", "Submit", "/dashboard/submit"),
    ("schedules", "Schedules", "/dashboard/schedules"),
    ("queues", "Queues", "/dashboard/queues"),
    ("audit", "Audit", "/dashboard/audit"),
    ("system", "System", "/dashboard/system"),
)


def is_htmx(request: Request) -> bool:
    """An htmx request wants a fragment; a boosted or plain navigation wants the page."""
    return request.headers.get("hx-request") == "true"


def settings_of(request: Request) -> Settings:
    return request.app.state.settings


def render(
    template: str, *, section: str = "", status_code: int = 200,
    headers: dict[str, str] | None = None, **context: Any,
) -> Template:
    # Fragments and pages differ by the hx-request header: caches must keep them apart.
    return Template(
        template_name=template,
        context={"nav": NAV, "section": section, **context},
        status_code=status_code,
        headers={"Vary": "HX-Request", "Cache-Control": "no-store", **(headers or {})},
    )


def go(request: Request, url: str) -> Response:
    """Navigate to url: htmx follows HX-Redirect with a real page load; others get a 303."""
    if is_htmx(request):
        return Response(b"", status_code=200, headers={"HX-Redirect": url})
    return Redirect(url, status_code=303)
