"""What handlers get injected: the queue the composition root opened."""

from __future__ import annotations

from litestar.datastructures import State
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


def provide_queue(state: State) -> Queue:
    return state.queue


def provide_task_watch(state: State) -> TaskWatch:
    return state.task_watch


def provide_event_hub(state: State) -> EventHub:
    return state.event_hub
