"""The web dashboard: server-rendered pages, htmx fragments polled for live updates.

It reads and writes through the same Queue (and schedule functions) the REST API uses, so a
form is validated exactly as a JSON request is. Everything it serves is in this package:
templates/, and static/ with a vendored htmx, so it works with no network at all.
"""

from __future__ import annotations

from pathlib import Path

from litestar import Router
from litestar.plugins.jinja import JinjaTemplateEngine
from litestar.template.config import TemplateConfig

from api import static_files
from api.dashboard import formatting, security
from api.dashboard.audit_pages import AuditPages
from api.dashboard.pages import LoginController, OverviewController
from api.dashboard.schedule_pages import SchedulePages
from api.dashboard.task_pages import TaskPages
from shared.settings import Settings

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
    return TemplateConfig(
        directory=HERE / "templates", engine=JinjaTemplateEngine, engine_callback=_configure
    )


def dashboard_router(settings: Settings) -> Router:
    """Every page and fragment, behind the login check and CSRF protection."""
    return Router(
        path="/",
        route_handlers=[OverviewController, TaskPages, SchedulePages, AuditPages,
                        LoginController],
        middleware=[security.csrf_middleware(settings)],
        before_request=security.require_login,
        include_in_schema=False,
    )


def static_router() -> Router:
    # Public: the login page needs its CSS, and htmx is no secret.
    return static_files.static_router(STATIC_PATH, lambda: STATIC_FILES, "dashboard-static")
