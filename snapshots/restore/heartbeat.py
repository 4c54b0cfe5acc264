"""The heartbeat of a running restore, by which the orphan reaper tells a dead worker."""

from __future__ import annotations

import logging
import threading
from typing import Any

from django.conf import settings
from django.db import connections
from django.utils import timezone

from snapshots.models import Restore

log = logging.getLogger(__name__)

# Tunables (candidates for settings: SQUIRREL_RESTORE_*).
HEARTBEAT_INTERVAL = 1.0
HEARTBEAT_STALE = 15.0  # a running restore without heartbeat this long has lost its worker


def heartbeat_stale() -> float:
    return float(getattr(settings, "RESTORE_HEARTBEAT_STALE", HEARTBEAT_STALE))


class Heartbeat:
    """Keeps ``Restore.heartbeat_at`` fresh from a thread while the worker lives."""

    def __init__(self, restore_id: Any) -> None:
        self._restore_id = restore_id
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="restore-heartbeat", daemon=True)

    def _run(self) -> None:
        try:
            while not self._stop.wait(HEARTBEAT_INTERVAL):
                Restore.objects.filter(pk=self._restore_id, status=Restore.Status.RUNNING).update(
                    heartbeat_at=timezone.now()
                )
        except Exception:  # a heartbeat must never kill the restore
            log.exception("restore %s heartbeat failed", self._restore_id)
        finally:
            connections.close_all()

    def __enter__(self) -> Heartbeat:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(5)
