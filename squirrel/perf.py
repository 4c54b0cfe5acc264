"""Bulk work at 50K PVs: keeping Python's cyclic garbage collector out of it.

A capture, a restore plan or a compare builds a million short-lived containers (entries,
rows, tuples) that reference counting alone frees: none of them is part of a cycle. Each
allocation still counts towards the collector's thresholds, so the collector runs hundreds
of times meanwhile, each time traversing everything young, and a few times the whole heap
(Django, Celery and the work itself): ~20 % of a 50K capture's CPU, measured with
``bench/snapshot.py``. ``gc_paused()`` switches it off for the
duration and back on afterwards; cyclic garbage made meanwhile is collected then, as usual.
Use it as ``with gc_paused():`` or as a decorator, ``@gc_paused()``.
"""

from __future__ import annotations

import gc
from collections.abc import Iterator
from contextlib import contextmanager


@contextmanager
def gc_paused() -> Iterator[None]:
    """Disable the cyclic garbage collector inside the block (nesting-safe; restores the
    previous state, so a caller that had it off keeps it off)."""
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()
