"""The web dashboard: server-rendered pages, htmx fragments polled for live updates.

It reads and writes through the same Queue (and schedule functions) the REST API uses, so a
form is validated exactly as a JSON request is. Everything it serves is in this package:
templates/, and static/ with a vendored htmx, so it works with no network at all.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from litestar import Request, Router
from litestar.exceptions import ValidationException
from litestar.response import Response
from litestar.template.config import TemplateConfig

from api import errors, static_files
from api.dashboard import formatting, security
from api.dashboard.audit_pages import AuditPages
from api.dashboard.common import is_htmx, render
from api.dashboard.pages import LoginController, OverviewController
from api.dashboard.queue_pages import QueuePages
from api.dashboard.schedule_pages import SchedulePages
from api.dashboard.task_pages import TaskPages
from api.lazy_templates import LazyJinja
from shared.settings import Settings

if TYPE_CHECKING:
    from litestar.plugins.jinja import JinjaTemplateEngine

HERE = Path(__file__).parent
STATIC_PATH = "/dashboard/static"
# Read once; pages link STATIC_PATH/<version>/..., cached for a year (api/static_files.py).
STATIC_FILES = static_files.StaticDirectory(HERE / "static")


def _configure(engine: JinjaTemplateEngine) -> None:
    engine.engine.filters.update(formatting.FILTERS)
    engine.engine.globals.update(formatting.GLOBALS)
    engine.engine.globals["static"] = f"{STATIC_PATH}/{STATIC_FILES.version}"
    engine.engine.trim_blocks = True
    engine.engine.lstrip_blocks = True


def template_config() -> TemplateConfig:
    # Jinja loads with the first page rendered, not in every API process (~3 MB).
    return TemplateConfig(instance=LazyJinja(HERE / "templates", _configure))


def _bad_address(request: Request, exc: ValidationException) -> Response:
    """A hand-edited address (?hours=9, ?limit=abc) gets a page that says what is wrong, not
    the API's problem+json; htmx's own requests keep the JSON (dashboard.js shows its detail)."""
    answer = errors.EXCEPTION_HANDLERS[ValidationException](request, exc)
    if is_htmx(request) or request.method != "GET":
        return answer
    detail = answer.content.get("detail", "") if isinstance(answer.content, dict) else ""
    return render("bad_address.html", title="Not a valid address", status_code=400,
                  detail=detail.removeprefix("invalid request: "), path=request.url.path)


def dashboard_router(settings: Settings) -> Router:
    """Every page and fragment, behind the login check and CSRF protection."""
    return Router(
        path="/",
        route_handlers=[OverviewController, TaskPages, SchedulePages, QueuePages, AuditPages,
                        LoginController],
        middleware=[security.csrf_middleware(settings)],
        before_request=security.require_login,
        exception_handlers={ValidationException: _bad_address},
        include_in_schema=False,
    )


def static_router() -> Router:
    # Public: the login page needs its CSS, and htmx is no secret.
    return static_files.static_router(STATIC_PATH, lambda: STATIC_FILES, "dashboard-static")
