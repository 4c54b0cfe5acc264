"""A restore's records written off its critical path (issue 18, restore cost).

The restore's own thread drives Channel Access: the puts and read-backs of one chunk, then the
next. Recording what happened (plan items, outcomes: COPY of up to 50K rows) needs only the
database, so ``Recorder`` does it on one thread of its own, in submission order, each call in
its own transaction, while the restore's thread goes on with the next chunk's Channel Access
work (PostgreSQL's work then overlaps it on the other core).

What must precede a write stays on the restore's thread: the safety snapshot is committed
before any put, and ``attempted_through`` is noted before each chunk's puts, so a restore whose
worker dies leaves nothing a reaper cannot account for. ``drain`` waits for every record (and
raises the first error) before the restore is finished or failed.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

from django.db import connection, transaction


def _in_transaction(fn: Callable[..., Any], args: tuple[Any, ...]) -> None:
    with transaction.atomic():
        fn(*args)


def _close() -> None:
    """Close the calling thread's connection (``connection`` resolves per thread)."""
    connection.close()


class Recorder:
    """One background thread of database writes, in order; a context manager."""

    def __init__(self) -> None:
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="restore-record")
        self._pending: list[Future[None]] = []

    def submit(self, fn: Callable[..., Any], *args: Any) -> None:
        """Run ``fn(*args)`` in a transaction on the recorder's thread, after what came before."""
        self._pending.append(self._pool.submit(_in_transaction, fn, args))

    def drain(self) -> None:
        """Wait for every submitted write; raise the first one's error."""
        pending, self._pending = self._pending, []
        errors = [f.exception() for f in pending]
        first = next((e for e in errors if e is not None), None)
        if first is not None:
            raise first

    def __enter__(self) -> Recorder:
        return self

    def __exit__(self, exc_type: Any, *exc: object) -> None:
        try:
            if exc_type is None:
                self.drain()
            else:  # failing anyway: record what can be recorded, keep the first error
                with contextlib.suppress(Exception):  # the caller's error is the one raised
                    self.drain()
        finally:
            self._pool.submit(_close).result()  # the thread's pooled connection back
            self._pool.shutdown(wait=True)
