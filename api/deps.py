"""What handlers get injected: the queue the composition root opened."""

from __future__ import annotations

from litestar import Request
from litestar.di import NamedDependency

from shared.queue import Queue
from shared.schedules import Schedules
from shared.task_events import EventHub
from shared.task_watch import TaskWatch

# Handlers name what they get injected explicitly (Litestar 3 drops inferred dependencies).
QueueDep = NamedDependency[Queue]
SchedulesDep = NamedDependency[Schedules]
TaskWatchDep = NamedDependency[TaskWatch]
EventHubDep = NamedDependency[EventHub]


def provide_queue(request: Request) -> Queue:
    # From the request, not a `state: State` parameter: Litestar converts that into a new
    # State (with a new RLock) for every request, 7% of a submission's CPU in the profile.
    return request.app.state.queue


def provide_task_watch(request: Request) -> TaskWatch:
    return request.app.state.task_watch


def provide_event_hub(request: Request) -> EventHub:
    return request.app.state.event_hub
