"""Running a restore exactly once (the task's body), failing it, and reaping restores whose
worker died (never retried).
"""

from __future__ import annotations

import logging
from typing import Any

from django.db import transaction
from django.utils import timezone

from jobs import services as jobs
from jobs.heartbeat import heartbeat_cutoff
from jobs.models import Job
from snapshots.capture import ProgressFn
from snapshots.models import Outcome, PlanAction, Restore, RestoreOutcome
from snapshots.restore.claims import claims_release
from snapshots.restore.execute import restore_execute
from snapshots.restore.records import (
    SKIP_OUTCOME,
    Result,
    items_load,
    outcomes_write,
    restore_finish_record,
    restore_result,
    restore_result_message,
    summary_store,
    unknown_count,
    warning_count,
)
from squirrel.exceptions import NotFound

log = logging.getLogger(__name__)


def restore_fail(*, restore_id: Any, error: str) -> Restore | None:
    """Fail a running restore: outcomes for what has none (``interrupted`` up to the attempted
    boundary, ``not-attempted`` after), counts, claims released. None if it was not running."""
    with transaction.atomic():
        restore = Restore.objects.select_for_update().filter(pk=restore_id).first()
        if restore is None or restore.status not in (
            Restore.Status.RUNNING,
            Restore.Status.PENDING,
        ):
            return None
        plan = restore.plan  # no query when plan_id is null
        if plan is not None:
            recorded = set(
                RestoreOutcome.objects.filter(restore=restore).values_list("item_id", flat=True)
            )
            boundary = restore.attempted_through or 0
            missing = [i for i in items_load(plan) if i.id not in recorded]
            outcomes_write(
                restore.pk,
                (
                    Result(
                        item=i,
                        outcome=Outcome.INTERRUPTED
                        if i.action == PlanAction.WRITE and i.id <= boundary
                        else Outcome.NOT_ATTEMPTED
                        if i.action == PlanAction.WRITE
                        else SKIP_OUTCOME[PlanAction(i.action)],
                        written=i.saved if i.id <= boundary else None,
                        error=(
                            "write sent, not verified: the restore stopped"
                            if i.action == PlanAction.WRITE and i.id <= boundary
                            else "not written: the restore stopped before it"
                            if i.action == PlanAction.WRITE
                            else i.note
                        ),
                    )
                    for i in missing
                ),
            )
        summary_store(restore)
        restore.status = Restore.Status.FAILED
        restore.error = error
        restore.finished_at = timezone.now()
        restore.save()
        claims_release(restore.pk)
        restore_finish_record(restore)
    if restore.job_id:
        job = Job.objects.filter(pk=restore.job_id).first()
        if job is not None and not job.finished:
            Job.objects.filter(pk=job.pk).update(
                job_data={**(job.job_data or {}), "result": restore_result(restore)}
            )
            jobs.job_fail(job_id=str(job.pk), error=error)
    return restore


def restore_run(*, restore_id: str) -> Restore | None:
    """The body of the restore task: run a pending restore exactly once (never a replay)."""
    now = timezone.now()
    claimed = Restore.objects.filter(pk=restore_id, status=Restore.Status.PENDING).update(
        status=Restore.Status.RUNNING, started_at=now, heartbeat_at=now
    )
    if not claimed:
        log.warning("restore %s is not pending; not running it (no replay)", restore_id)
        return None
    restore = Restore.objects.select_related("plan").get(pk=restore_id)
    holder: dict[str, Restore] = {}

    def beat() -> None:
        """The restore row's heartbeat, beside the job's (the reaper reads this one)."""
        Restore.objects.filter(pk=restore.pk, status=Restore.Status.RUNNING).update(
            heartbeat_at=timezone.now()
        )

    def work(job: Job, progress: ProgressFn) -> jobs.JobOutcome:
        try:
            done = restore_execute(restore=restore, progress=progress)
        except Exception as exc:
            restore_fail(restore_id=restore.pk, error=jobs.error_text(exc))
            raise
        holder["restore"] = done
        return jobs.JobOutcome(
            result_id=str(done.snapshot_id) if done.snapshot_id else None,
            message=restore_result_message(
                total=done.total,
                success=done.success_count,
                failed=done.failure_count,
                unknown=unknown_count(done),
                warnings=warning_count(done),
            ),
            result=restore_result(done),
        )

    if restore.job_id is None:
        raise NotFound(f"Restore {restore_id} has no job")
    try:
        jobs.job_run(
            job_id=str(restore.job_id), work=work, will_retry=lambda exc: False, beats=[beat]
        )
    except Exception:
        # Recorded: the restore and its job are failed, with the error. Never retried.
        log.warning("restore %s failed", restore_id, exc_info=True)
        return Restore.objects.filter(pk=restore_id).first()
    return holder.get("restore")


def restore_reap_orphans(*, stale_after: float | None = None) -> list[Restore]:
    """Fail running restores whose worker stopped sending heartbeats (never retried; the one
    heartbeat rule: ``jobs.heartbeat``)."""
    cutoff = heartbeat_cutoff(stale_after)
    reaped = []
    for rid, beat in Restore.objects.filter(
        status=Restore.Status.RUNNING, heartbeat_at__lt=cutoff
    ).values_list("id", "heartbeat_at"):
        done = restore_fail(
            restore_id=rid,
            error=(
                f"The worker running this restore stopped (last heartbeat {beat:%H:%M:%S} UTC). "
                "It is not retried automatically: check the outcomes for what was written."
            ),
        )
        if done is not None:
            reaped.append(done)
    return reaped
