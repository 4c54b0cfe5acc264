"""Celery tasks of the snapshots app: thin wrappers around the capture and restore services."""

from __future__ import annotations

import redis
from celery import shared_task
from django.db import InterfaceError, OperationalError

from jobs.services import job_run
from snapshots import capture, schedules
from snapshots.services import SNAPSHOT_CAPTURE_TASK
from squirrel import audit

# Worth another attempt: the broker, cache or database went away for a moment.
RETRYABLE: tuple[type[Exception], ...] = (
    ConnectionError,
    TimeoutError,
    redis.exceptions.ConnectionError,
    redis.exceptions.TimeoutError,
    OperationalError,
    InterfaceError,
)
MAX_RETRIES = 2


@shared_task(
    name=SNAPSHOT_CAPTURE_TASK,
    bind=True,
    autoretry_for=RETRYABLE,
    max_retries=MAX_RETRIES,
    retry_backoff=2,
    retry_backoff_max=30,
    retry_jitter=False,
    acks_late=True,
    reject_on_worker_lost=True,
)
def snapshot_capture_task(self, job_id: str) -> str | None:
    """Capture a snapshot for a ``snapshot_create`` job (idempotent: a completed job is not
    captured again, and the snapshot commits together with the job's completion)."""

    def will_retry(exc: Exception) -> bool:
        return isinstance(exc, RETRYABLE) and self.request.retries < self.max_retries

    outcome = job_run(job_id=job_id, work=capture.snapshot_capture_job, will_retry=will_retry)
    return outcome.result_id if outcome else None


@shared_task(name=schedules.SCHEDULE_RUN_TASK, ignore_result=True)
def schedule_run_task(schedule_id: str) -> str | None:
    """A run of a snapshot schedule, sent by beat: queue its capture job (or skip it)."""
    job = schedules.schedule_run(schedule_id=schedule_id)
    return str(job.pk) if job is not None else None


@shared_task(
    name="snapshots.tasks.retention_sweep_task",
    ignore_result=True,
    autoretry_for=RETRYABLE,
    max_retries=MAX_RETRIES,
    retry_backoff=2,
)
def retention_sweep_task() -> int:
    """The periodic retention sweep over every schedule (settings.CELERY_BEAT_SCHEDULE)."""
    return schedules.retention_sweep(actor=audit.system("retention"))


# Restore tasks live beside their services; imported here so the worker's autodiscovery
# (which looks for ``<app>.tasks``) registers them.
from snapshots.restore.tasks import restore_run_task  # noqa: E402, F401
