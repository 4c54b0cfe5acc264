"""Celery task of restores: a thin wrapper around snapshots.restore.run.restore_run.

Never retried and never re-delivered (decision 7): ``acks_late=False`` acknowledges the message
when the worker takes it, so a worker killed mid-restore does not hand the writes to another
worker; the orphan reaper (snapshots.restore.run.restore_reap_orphans) then fails the restore.
"""

from __future__ import annotations

from celery import shared_task

from snapshots.restore.request import RESTORE_RUN_TASK
from snapshots.restore.run import restore_run


@shared_task(
    name=RESTORE_RUN_TASK,
    acks_late=False,
    reject_on_worker_lost=False,
    max_retries=0,
    ignore_result=True,
)
def restore_run_task(restore_id: str) -> None:
    """Run one pending restore (a restore that is not pending is left alone)."""
    restore_run(restore_id=restore_id)
