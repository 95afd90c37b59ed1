"""What handlers get injected: the queue the composition root opened."""

from __future__ import annotations

from litestar import Request
from litestar.di import NamedDependency

from shared.queue import Queue
from shared.schedules import Schedules

# Handlers name what they get injected explicitly (Litestar 3 drops inferred dependencies).
QueueDep = NamedDependency[Queue]
SchedulesDep = NamedDependency[Schedules]


def provide_queue(request: Request) -> Queue:
    # From the request, not a `state: State` parameter: Litestar converts that into a new
    # State (with a new RLock) for every request, 7% of a submission's CPU in the profile.
    return request.app.state.queue
