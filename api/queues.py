"""/api/queues: named queues with their counts, concurrency limit and pause (docs/queues.md)."""

from __future__ import annotations

from typing import Annotated

from litestar import Controller, get, put
from litestar.di import NamedDependency, Provide
from litestar.params import JSONBody, Parameter

from api.auth import BEARER_SECURITY
from api.deps import QueueDep
from api.errors import problem_responses
from api.request_rules import before_api_request
from shared.queue_schemas import QueueInfo, QueueUpdate
from shared.queues import Queues
from shared.schemas import QUEUE_NAME_PATTERN

QueueName = Annotated[str, Parameter(
    max_length=64, pattern=QUEUE_NAME_PATTERN,
    description="letters, digits, '-', '_', '.'; up to 64 characters",
)]
QueuesDep = NamedDependency[Queues]


def provide_queues(queue: QueueDep) -> Queues:
    return Queues(queue)


class QueueController(Controller):
    path = "/api/queues"
    tags = ["queues"]
    security = BEARER_SECURITY
    dependencies = {"queues": Provide(provide_queues, sync_to_thread=False)}
    before_request = before_api_request

    @get("/", summary="List queues",
         description="Every queue that has tasks or settings, by name: its tasks by status, "
         "its concurrency limit (null: none) and whether it is paused.")
    async def list_queues(self, queues: QueuesDep) -> list[QueueInfo]:
        return await queues.list()

    @get("/{name:str}", summary="Get a queue",
         description="A queue nobody used yet answers with zero counts, no limit, not paused.",
         responses=problem_responses(422))
    async def get_queue(self, name: QueueName, queues: QueuesDep) -> QueueInfo:
        return await queues.get(name)

    @put(
        "/{name:str}",
        summary="Set a queue's concurrency limit or pause it",
        description="`concurrency`: at most this many of the queue's tasks run at once across "
        "every worker process and host (null: no limit). `paused: true`: workers take none "
        "of its tasks (running ones finish); `false` resumes it at once. A field left out "
        "keeps its value.",
        responses=problem_responses(422),
    )
    async def update_queue(
        self, name: QueueName, data: JSONBody[QueueUpdate], queues: QueuesDep
    ) -> QueueInfo:
        return await queues.update(name, data)
