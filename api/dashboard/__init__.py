"""The web dashboard: server-rendered pages, htmx fragments polled for live updates.

It reads and writes through the same Queue (and schedule functions) the REST API uses, so a
form is validated exactly as a JSON request is. Everything it serves is in this package:
templates/, and static/ with a vendored htmx, so it works with no network at all.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from litestar import Router
from litestar.template.config import TemplateConfig

from api import static_files
from api.dashboard import formatting, security
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


def dashboard_router(settings: Settings) -> Router:
    """Every page and fragment, behind the login check and CSRF protection."""
    return Router(
        path="/",
        route_handlers=[OverviewController, TaskPages, SchedulePages, QueuePages,
                        LoginController],
        middleware=[security.csrf_middleware(settings)],
        before_request=security.require_login,
        include_in_schema=False,
    )


def static_router() -> Router:
    # Public: the login page needs its CSS, and htmx is no secret.
    return static_files.static_router(STATIC_PATH, lambda: STATIC_FILES, "dashboard-static")
