"""What handlers get injected: the queue the composition root opened."""

from __future__ import annotations

from litestar.datastructures import State

from shared.queue import Queue


def provide_queue(state: State) -> Queue:
    return state.queue
