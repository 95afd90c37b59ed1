"""shared/heap.py: start-up objects leave the collector's sight; garbage is still collected."""

from __future__ import annotations

import gc
import weakref

from shared.heap import API_YOUNG_THRESHOLD, collect_young_less_often, freeze_start_up_objects


class _Node:
    def __init__(self) -> None:
        self.me = self  # a reference cycle: only the cyclic collector frees it


def test_start_up_garbage_is_collected_and_the_rest_frozen_while_later_garbage_is_freed() -> None:
    before = _Node()
    gone_before = weakref.ref(before)
    del before
    try:
        freeze_start_up_objects()
        assert gone_before() is None  # start-up's cycles were freed, not frozen for ever
        assert gc.get_freeze_count() > 0
        later = _Node()
        gone_later = weakref.ref(later)
        del later
        gc.collect()
        assert gone_later() is None  # what is made after start-up is collected as before
    finally:
        gc.unfreeze()


def test_with_the_apis_young_threshold_cycles_are_still_freed_without_an_explicit_collect():
    before = gc.get_threshold()
    try:
        collect_young_less_often()
        assert gc.get_threshold() == (API_YOUNG_THRESHOLD, *before[1:])
        node = _Node()
        gone = weakref.ref(node)
        del node
        kept = [[] for _ in range(3 * API_YOUNG_THRESHOLD)]  # allocations, as requests make
        assert gone() is None  # a young collection ran on its own and freed the cycle
        del kept
    finally:
        gc.set_threshold(*before)
