"""The one heartbeat rule of running work (snapshot captures, restores): how a dead worker is
told from a slow one.

1. While a worker runs a job it keeps timestamps fresh from a thread of its own
   (``Heartbeat``), one beat every HEARTBEAT_INTERVAL seconds: ``Job.heartbeat_at`` for every
   job (``jobs.services.job_run``), plus whatever the work names (a restore's own row).
2. A running record whose timestamp is older than ``settings.JOB_HEARTBEAT_STALE``
   (``heartbeat_cutoff``) has lost its worker (SIGKILL, OOM, a crashed machine): the job
   type's reaper (``jobs.services.job_reaper_register``) fails it when the job is polled,
   instead of leaving it ``running`` until the broker's visibility timeout.
3. A beat never raises into the work it reports on: a failed beat is logged, its connection
   dropped, and the next beat tries again (a database blip must not stop the heartbeat for
   good and get a live worker reaped).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Sequence
from datetime import datetime, timedelta

from django.conf import settings
from django.db import connections
from django.utils import timezone

log = logging.getLogger(__name__)

HEARTBEAT_INTERVAL = 1.0  # seconds between beats (JOB_HEARTBEAT_STALE is a multiple of it)
HEARTBEAT_STALE = 15.0  # the default of settings.JOB_HEARTBEAT_STALE

Beat = Callable[[], object]


def heartbeat_stale() -> float:
    """Seconds without a beat after which running work counts as orphaned (rule 2)."""
    return float(getattr(settings, "JOB_HEARTBEAT_STALE", HEARTBEAT_STALE))


def heartbeat_cutoff(stale_after: float | None = None) -> datetime:
    """A heartbeat older than this is stale: its worker died (rule 2)."""
    stale = heartbeat_stale() if stale_after is None else stale_after
    return timezone.now() - timedelta(seconds=stale)


class Heartbeat:
    """Runs every beat of ``beats`` each HEARTBEAT_INTERVAL seconds from a thread while the
    ``with`` block runs (rules 1 and 3)."""

    def __init__(self, beats: Sequence[Beat], *, name: str) -> None:
        self._beats = list(beats)
        self._name = name
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)

    def _run(self) -> None:
        failing = False
        try:
            while not self._stop.wait(HEARTBEAT_INTERVAL):
                try:
                    for beat in self._beats:
                        beat()
                    failing = False
                except Exception:  # rule 3: never into the work; try again next time
                    if not failing:
                        log.exception("%s: a heartbeat failed; retrying", self._name)
                    failing = True
                    connections.close_all()  # a broken connection is reopened next beat
        finally:
            connections.close_all()  # this thread's own connections

    def __enter__(self) -> Heartbeat:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(5)
