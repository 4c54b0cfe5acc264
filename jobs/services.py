"""Job records: create, start, progress, complete, fail, and the one wrapper every task uses.

Contract §5 and decision 7: a job is readable the moment the POST that created it returns
(created and committed by the caller's transaction, its task enqueued on commit), its progress
moves while work runs, and it is reported ``failed`` only when no retry will follow.

A worker keeps a running job's heartbeat fresh (``jobs.heartbeat``); a job whose worker died is
failed by its type's reaper when it is polled (``job_get_current``), and a finished job, failed
or completed, is never run again (a redelivered message finds it so and does nothing).
"""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from django.db import transaction
from django.utils import timezone

from jobs.heartbeat import Beat, Heartbeat, heartbeat_cutoff
from jobs.models import Job
from squirrel.exceptions import NotFound

log = logging.getLogger(__name__)

DEFAULT_COMPLETED = "Job completed successfully"
STARTED = "Job started"
FAILED = "Job failed"
# Progress writes: at most one every PROGRESS_INTERVAL seconds unless it moved PROGRESS_STEP
# points (or the message changed with a forced write).
PROGRESS_INTERVAL = 0.5
PROGRESS_STEP = 2

ProgressFn = Callable[[int, str | None], None]


class JobAbandoned(Exception):
    """The job was failed while this attempt ran (its reaper took the worker for dead): the
    attempt's result is discarded and the job stays failed."""


@dataclass(frozen=True)
class JobOutcome:
    """What a job's work produced: the id it points at and the final message."""

    result_id: str | None = None
    message: str | None = None
    result: dict[str, Any] | None = None


def job_create(*, type: str, job_data: dict[str, Any] | None, created_by: str | None = None) -> Job:
    """Create a pending job (committed with the caller's transaction)."""
    job = Job(
        type=type,
        status=Job.Status.PENDING,
        progress=0,
        job_data=job_data,
        created_by=created_by,
    )
    job.full_clean()
    job.save()
    return job


def job_get(*, job_id: str) -> Job:
    """The job, or NotFound in the contract's words."""
    try:
        return Job.objects.get(pk=uuid.UUID(str(job_id)))
    except (Job.DoesNotExist, ValueError):
        raise NotFound(f"Job {job_id} not found") from None


# Job type -> a function that fails that type's running jobs whose worker died, returning what
# it failed. Filled by the app that runs such jobs (snapshots, in its AppConfig.ready): jobs
# sits below it and may not import it.
_reapers: dict[str, Callable[[], Sequence[object]]] = {}


def job_reaper_register(*, type: str, reaper: Callable[[], Sequence[object]]) -> None:
    """Install the orphan reaper of one job type (one per type; a second replaces the first)."""
    _reapers[type] = reaper


def job_get_current(*, job_id: str) -> Job:
    """The job as a poll should see it: a running job whose worker died is failed first by its
    type's reaper, instead of staying ``running`` until the broker redelivers its message."""
    job = job_get(job_id=job_id)
    reaper = _reapers.get(job.type)
    if reaper is not None and job.status == Job.Status.RUNNING and reaper():
        job = job_get(job_id=job_id)
    return job


def job_reap_all() -> None:
    """Run every type's reaper (for listings of many jobs, such as the admin's)."""
    for reaper in _reapers.values():
        reaper()


def job_reap_stale(
    *, type: str, error: Callable[[datetime], str], stale_after: float | None = None
) -> list[Job]:
    """Fail the running jobs of ``type`` whose heartbeat is stale (``jobs.heartbeat``, rule 2)
    with ``error(last heartbeat)``; the jobs failed.

    A job whose row another transaction holds is being finished by a live worker (a capture
    commits its snapshot with the job's row locked) and is skipped; a job without a heartbeat
    is held by no worker (waiting for a retry) and is left alone.
    """
    cutoff = heartbeat_cutoff(stale_after)
    now = timezone.now()
    with transaction.atomic():
        stale = list(
            Job.objects.select_for_update(skip_locked=True)
            .filter(type=type, status=Job.Status.RUNNING, heartbeat_at__lt=cutoff)
            .values_list("pk", "heartbeat_at")
        )
        for pk, beat in stale:
            log.warning("job %s: no heartbeat since %s, its worker died; failing it", pk, beat)
            Job.objects.filter(pk=pk).update(
                status=Job.Status.FAILED,
                message=FAILED,
                error=error(beat or cutoff),  # never None: filtered on heartbeat_at < cutoff
                completed_at=now,
                updated_at=now,
            )
    return list(Job.objects.filter(pk__in=[pk for pk, _ in stale]))


def job_start(*, job_id: str) -> Job | None:
    """Mark the job running (``startedAt`` only the first time) with a fresh heartbeat; None
    when it is gone or already finished (a finished job is never reopened)."""
    now = timezone.now()
    with transaction.atomic():
        job = Job.objects.select_for_update().filter(pk=job_id).first()
        if job is None or job.finished:
            return None
        job.status = Job.Status.RUNNING
        job.heartbeat_at = now
        job.progress = 0
        job.message = STARTED
        job.error = None
        job.completed_at = None
        job.attempts = job.attempts + 1
        if job.started_at is None:
            job.started_at = now
        job.save(
            update_fields=[
                "status",
                "progress",
                "message",
                "error",
                "completed_at",
                "attempts",
                "started_at",
                "heartbeat_at",
                "updated_at",
            ]
        )
    _last_progress.pop(str(job_id), None)
    return job


# job id -> (monotonic time, progress) of the last write, for throttling.
_last_progress: dict[str, tuple[float, int]] = {}


def job_progress(
    *, job_id: str, progress: float, message: str | None = None, force: bool = False
) -> bool:
    """Record progress (clamped to 0..100) and, when given, the message; True when written.

    Throttled per job: a write happens when ``force`` is set, when progress moved at least
    PROGRESS_STEP points since the last write, or when PROGRESS_INTERVAL seconds passed.
    Only a running job is updated, so a late progress write never reopens a finished job.
    """
    value = max(0, min(100, int(progress)))
    key = str(job_id)
    now = time.monotonic()
    last = _last_progress.get(key)
    if (
        not force
        and last is not None
        and abs(value - last[1]) < PROGRESS_STEP
        and now - last[0] < PROGRESS_INTERVAL
    ):
        return False
    _last_progress[key] = (now, value)
    fields: dict[str, Any] = {"progress": value, "updated_at": timezone.now()}
    if message:
        fields["message"] = message[:255]
    return bool(Job.objects.filter(pk=job_id, status=Job.Status.RUNNING).update(**fields))


def job_complete(
    *,
    job_id: str,
    result_id: str | None = None,
    message: str | None = None,
    result: dict[str, Any] | None = None,
) -> Job | None:
    """Mark the job completed at 100 % with its result; None when it is gone."""
    with transaction.atomic():
        job = Job.objects.select_for_update().filter(pk=job_id).first()
        if job is None:
            return None
        job.status = Job.Status.COMPLETED
        job.progress = 100
        job.message = (message or DEFAULT_COMPLETED)[:255]
        if result_id is not None:
            job.result_id = str(result_id)
        job.error = None
        job.completed_at = timezone.now()
        if result is not None:
            job.job_data = {**(job.job_data or {}), "result": result}
        job.save()
    _last_progress.pop(str(job_id), None)
    return job


def job_fail(*, job_id: str, error: str) -> Job | None:
    """Mark the job failed for good (no retry follows); None when it is gone. A finished job
    keeps its outcome: the first failure's error stands (a reaper's, say, not the late error
    of the attempt it gave up on)."""
    updated = Job.objects.filter(pk=job_id).exclude(
        status__in=(Job.Status.COMPLETED, Job.Status.FAILED)
    )
    updated.update(
        status=Job.Status.FAILED,
        message=FAILED,
        error=error,
        completed_at=timezone.now(),
        updated_at=timezone.now(),
    )
    _last_progress.pop(str(job_id), None)
    return Job.objects.filter(pk=job_id).first()


def job_note_retry(*, job_id: str, error: str) -> None:
    """An attempt failed and a retry follows: the job stays running and says so. No worker
    holds it until the retry starts, so it has no heartbeat (nor a reaper's attention)."""
    Job.objects.filter(pk=job_id, status=Job.Status.RUNNING).update(
        message=f"Retrying after error: {error}"[:255],
        heartbeat_at=None,
        updated_at=timezone.now(),
    )


def job_heartbeat(*, job_id: str) -> None:
    """One beat of a running job; skipped while another transaction holds its row (a capture
    committing its snapshot with the job), so a beat never waits on the work it reports."""
    with transaction.atomic():
        held = Job.objects.select_for_update(skip_locked=True).filter(
            pk=job_id, status=Job.Status.RUNNING
        )
        if held.exists():
            Job.objects.filter(pk=job_id).update(heartbeat_at=timezone.now())


def error_text(exc: BaseException) -> str:
    """The job's ``error`` for an exception: ``<Type>: <message>`` (contract §5.2)."""
    text = str(exc)
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def job_run(
    *,
    job_id: str,
    work: Callable[..., JobOutcome],
    will_retry: Callable[[Exception], bool],
    beats: Sequence[Beat] = (),
) -> JobOutcome | None:
    """Run ``work`` as the job's attempt, recording running / completed / failed.

    1. A missing job is logged and skipped (None). A job already completed (a redelivery after
       its result was committed) is not run again: its recorded outcome is returned. A job
       already failed (its reaper gave its worker up for dead) is not run again either: None.
    2. The job is marked running and ``work(job=job, progress=progress)`` runs with the job's
       heartbeat kept fresh (and every beat of ``beats``: ``jobs.heartbeat``);
       ``progress(percent, msg)`` writes throttled progress.
    3. On success the job is completed, unless ``work`` already completed it inside its own
       transaction (then the stored result stands) or the job was failed meanwhile.
    4. ``JobAbandoned`` from ``work`` (the job was failed while it ran) ends the attempt quietly
       (None). On any other exception the job is marked failed only if ``will_retry(exc)`` is
       false; either way the exception propagates so the task's retry policy sees it.
    """
    existing = Job.objects.filter(pk=job_id).first()
    if existing is None:
        log.warning("job %s does not exist; nothing to do", job_id)
        return None
    if existing.status == Job.Status.COMPLETED:
        log.info("job %s already completed; not running it again", job_id)
        return JobOutcome(result_id=existing.result_id, message=existing.message)
    job = job_start(job_id=job_id)
    if job is None:
        log.info("job %s is gone or already finished; not running it again", job_id)
        return None

    def progress(percent: int, message: str | None = None) -> None:
        job_progress(job_id=job_id, progress=percent, message=message)

    def beat() -> None:
        job_heartbeat(job_id=job_id)

    try:
        with Heartbeat([beat, *beats], name=f"job-{job_id}-heartbeat"):
            outcome = work(job=job, progress=progress)
    except JobAbandoned as exc:
        log.warning("job %s: %s", job_id, exc)
        return None
    except Exception as exc:
        if will_retry(exc):
            log.warning("job %s attempt failed, will retry: %s", job_id, exc)
            job_note_retry(job_id=job_id, error=error_text(exc))
        else:
            log.exception("job %s failed", job_id)
            job_fail(job_id=job_id, error=error_text(exc))
        raise
    current = Job.objects.filter(pk=job_id).values_list("status", flat=True).first()
    if current == Job.Status.FAILED:
        log.warning("job %s was failed while this attempt ran; its result is discarded", job_id)
        return None
    if current != Job.Status.COMPLETED:
        job_complete(
            job_id=job_id,
            result_id=outcome.result_id,
            message=outcome.message,
            result=outcome.result,
        )
    return outcome
