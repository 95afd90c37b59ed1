"""The Litestar application. It is handed an open Queue: the command line owns the database."""

from __future__ import annotations

from collections.abc import Iterable

from litestar import Litestar
from litestar.datastructures import State
from litestar.di import Provide
from litestar.openapi import OpenAPIConfig
from litestar.openapi.spec import Components, SecurityScheme
from prometheus_client import CollectorRegistry

from api.audit import AuditController
from api.audit_context import AuditActor
from api.auth import BEARER_SCHEME_NAME, BearerAuth, cookie_session, open_operations
from api.body import StrictBodyRequest
from api.dashboard import dashboard_router, security, static_router, template_config
from api.deps import provide_event_hub, provide_queue, provide_task_watch
from api.errors import EXCEPTION_HANDLERS, document_errors
from api.events import EventController
from api.fast_submit import FastSubmit
from api.front_door import FrontDoor
from api.http_methods import methods_by_template
from api.metrics import ApiMetrics, MetricsController
from api.openapi import DocsPage, DocumentJson, docs_router, handler_opts, shape
from api.queues import QueueController
from api.schedules import ScheduleController
from api.system import SystemController
from api.tasks import TaskController
from shared.queue import Queue
from shared.settings import Settings
from shared.task_events import EventHub
from shared.task_watch import TaskWatch

MAX_BODY_BYTES = 1024 * 1024
# The OpenAPI document: JSON at /schema/openapi.json, a browsable page at /schema.
OPENAPI_PATH = "/schema"


def create_app(
    queue: Queue, settings: Settings | None = None, *,
    extra_metrics: Iterable[CollectorRegistry] = (),
) -> Litestar:
    """extra_metrics: more registries for /metrics to export (the worker's, in `serve`)."""
    settings = settings or queue.settings
    metrics = ApiMetrics(queue, extra_metrics)
    task_watch = TaskWatch(queue.store, fallback=settings.wait_poll)  # ?wait= (api/tasks.py)
    event_hub = EventHub(queue.store, fallback=settings.wait_poll)  # /api/events
    # /debug/... exists only in debug mode: without it those paths are plain 404s, and the
    # profiler (pyinstrument, ~7 MB) is never imported.
    debug_routes: list[type] = []
    on_startup = []
    if settings.debug:
        from api.debug import DebugController, start_tracing

        debug_routes, on_startup = [DebugController], [start_tracing]
    app = Litestar(
        route_handlers=[
            MetricsController, *debug_routes,
            TaskController, SystemController, dashboard_router(settings), static_router(),
            ScheduleController, EventController, QueueController, AuditController,
        ],
        template_config=template_config(),
        dependencies={"queue": Provide(provide_queue, sync_to_thread=False),
                      "task_watch": Provide(provide_task_watch, sync_to_thread=False),
                      "event_hub": Provide(provide_event_hub, sync_to_thread=False)},
        state=State({"queue": queue, "settings": settings, "metrics": metrics,
                     "task_watch": task_watch, "event_hub": event_hub}),
        # Debug mode traces allocations for /debug/memory from the moment the app is up
        # (tracing while Litestar builds the app would triple the start-up time).
        on_startup=on_startup,
        on_shutdown=[metrics.close, task_watch.close, event_hub.close],
        # Litestar would replace the root logging handler with its own plain-text one;
        # shared/logs.py already routes standard logging through structlog.
        logging_config=None,
        exception_handlers=EXCEPTION_HANDLERS,
        request_max_body_size=MAX_BODY_BYTES,
        request_class=StrictBodyRequest,  # strict, bounded bodies (api/body.py)
        openapi_config=OpenAPIConfig(
            title="LocalFlow", version="0.1.0", path=OPENAPI_PATH,
            # The shaped document (api/openapi.py) and Redoc from vendored files.
            render_plugins=[DocumentJson(), DocsPage(OPENAPI_PATH)],
            openapi_router=docs_router(OPENAPI_PATH),
            components=Components(security_schemes={BEARER_SCHEME_NAME: SecurityScheme(
                type="http", scheme="bearer",
                description="LOCALFLOW_API_TOKEN; required only when the server has one",
            )}),
        ),
        # Bearer token on everything but /health, the schema and the dashboard (api/auth.py);
        # a dashboard session may also read.
        middleware=[BearerAuth(OPENAPI_PATH, cookie_session(
            security.SESSION_COOKIE, security.session_valid
        ))],
        debug=False,
    )
    # Every operation's error answers and security, derived from its shape (api/errors.py).
    document_errors(app.openapi_schema, open_operations(app, OPENAPI_PATH), BEARER_SCHEME_NAME)
    # ... then finished for generated clients, and auth described as configured.
    app.state["openapi_document"] = shape(
        app.openapi_schema.to_schema(), token_required=bool(settings.api_token),
        opts=handler_opts(app),
    )
    # Outside routing and error handling, so 404s, 405s and errors are counted and carry a
    # request id too; then one spelling of the path, what a web page may not do, and HEAD and
    # Allow: one plain ASGI layer (api/front_door.py).
    # Inside it, who is acting for the audit trail (api/audit_context.py): writes only; then
    # the plain case of POST /api/tasks without Litestar's per-request machinery
    # (api/fast_submit.py).
    app.asgi_handler = FrontDoor(
        AuditActor(FastSubmit(app.asgi_handler, queue, settings.api_token), settings),
        settings, metrics, methods_by_template(app),
        access_log=settings.access_log,
    )
    return app
