"""What handlers get injected: the queue the composition root opened."""

from __future__ import annotations

from litestar.datastructures import State
from litestar.di import NamedDependency

from shared.queue import Queue
from shared.schedules import Schedules

# Handlers name what they get injected explicitly (Litestar 3 drops inferred dependencies).
QueueDep = NamedDependency[Queue]
SchedulesDep = NamedDependency[Schedules]


def provide_queue(state: State) -> Queue:
    return state.queue
