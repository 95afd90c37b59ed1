"""The Litestar application. It is handed an open Queue: the command line owns the database."""

from __future__ import annotations

from litestar import Litestar
from litestar.datastructures import State
from litestar.di import Provide
from litestar.openapi import OpenAPIConfig

from api.deps import provide_queue
from api.errors import EXCEPTION_HANDLERS
from api.schedules import ScheduleController
from api.system import SystemController
from api.tasks import TaskController
from shared.queue import Queue
from shared.settings import Settings

MAX_BODY_BYTES = 1024 * 1024


def create_app(queue: Queue, settings: Settings | None = None) -> Litestar:
    settings = settings or queue.settings
    return Litestar(
        route_handlers=[TaskController, SystemController, ScheduleController],
        dependencies={"queue": Provide(provide_queue, sync_to_thread=False)},
        state=State({"queue": queue, "settings": settings}),
        exception_handlers=EXCEPTION_HANDLERS,
        request_max_body_size=MAX_BODY_BYTES,
        openapi_config=OpenAPIConfig(title="LocalFlow", version="0.1.0", path="/schema"),
        debug=False,
    )
