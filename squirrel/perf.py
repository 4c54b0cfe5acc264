"""Bulk work at 50K PVs: keeping Python's cyclic garbage collector out of it.

A capture, a restore plan or a compare builds a million short-lived containers (entries,
rows, tuples) that reference counting alone frees: none of them is part of a cycle. Each
allocation still counts towards the collector's thresholds, so the collector runs hundreds
of times meanwhile, each time traversing everything young, and a few times the whole heap
(Django, Celery and the work itself): ~20 % of a 50K capture's CPU, measured with
``bench/snapshot.py``. ``gc_paused()`` switches it off for the duration and back on
afterwards; cyclic garbage made meanwhile (by any thread: the collector is per process) is
collected then, as usual. Keep it to bounded bulk work, not to loops that wait for hours.
Use it as ``with gc_paused():`` or as a decorator, ``@gc_paused()``.
"""

from __future__ import annotations

import gc
import threading
from collections.abc import Iterator
from contextlib import contextmanager

# The collector is process-wide while blocks run in several threads (a compare in one of
# daphne's threads, a capture in another): the first block in switches it off, the last one
# out switches it back on if it was on.
_lock = threading.Lock()
_depth = 0
_was_enabled = False


@contextmanager
def gc_paused() -> Iterator[None]:
    """Disable the cyclic garbage collector inside the block (nesting- and thread-safe; a
    collector that was off before stays off)."""
    global _depth, _was_enabled
    with _lock:
        if _depth == 0:
            _was_enabled = gc.isenabled()
            gc.disable()
        _depth += 1
    try:
        yield
    finally:
        with _lock:
            _depth -= 1
            if _depth == 0 and _was_enabled:
                gc.enable()
