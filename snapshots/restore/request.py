"""Restore requests: the audit row, its Job and the claims in ONE transaction, the task enqueued
on commit (a plain restore, the execution of a stored plan, or the revert of a restore).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from celery import current_app
from django.conf import settings
from django.db import IntegrityError, transaction
from django.db.models import QuerySet

from jobs import services as jobs
from jobs.models import Job
from snapshots.models import PlanAction, Restore, RestorePlan, Snapshot
from snapshots.restore.claims import idempotent_restore, pvs_claim, request_digest
from snapshots.restore.plan import plan_age, restore_plan_get, writable_pv_ids
from snapshots.restore.records import restore_get
from snapshots.restore.run import restore_reap_orphans
from snapshots.restore.selection import Selection
from snapshots.services import snapshot_get
from squirrel.exceptions import Conflict

# The restore task's name (restore/tasks.py), enqueued by name: requests do not import the
# tasks. Kept from when the task lived in snapshots/restore_tasks.py: queued messages carry it.
RESTORE_RUN_TASK = "snapshots.restore_tasks.restore_run_task"


def restore_queued_message(snapshot_id: Any) -> str:
    return f"Snapshot restore queued ({snapshot_id})"


def _request(
    *,
    kind: str,
    snapshot: Snapshot,
    plan: RestorePlan | None,
    reverts: Restore | None,
    selection: Selection,
    claim_ids: Callable[[], QuerySet],
    created_by: str | None,
    idempotency_key: str | None,
    digest: str,
    enqueue: bool,
) -> Restore:
    restore_reap_orphans()
    existing = idempotent_restore(idempotency_key, digest)
    if existing is not None:
        return existing
    try:
        with transaction.atomic():
            job = jobs.job_create(
                type=Job.Type.SNAPSHOT_RESTORE,
                job_data={"snapshotId": str(snapshot.pk)},
                created_by=created_by,
            )
            restore = Restore(
                kind=kind,
                job=job,
                snapshot=snapshot,
                snapshot_title=snapshot.title,
                plan=plan,
                reverts=reverts,
                created_by=created_by,
                pv_ids=list(selection.pv_ids) if selection.pv_ids is not None else None,
                tag_filters=selection.to_json()["tagFilters"] or None,
                idempotency_key=idempotency_key or None,
                request_digest=digest,
            )
            restore.full_clean(exclude=["idempotency_key"])
            restore.save()
            job.job_data = {
                "snapshotId": str(snapshot.pk),
                "restoreId": str(restore.pk),
                "planId": str(plan.pk) if plan else None,
            }
            job.save(update_fields=["job_data"])
            pvs_claim(restore, claim_ids())
            if enqueue:
                restore_id = str(restore.pk)
                run_task = current_app.signature(RESTORE_RUN_TASK)
                transaction.on_commit(lambda: run_task.delay(restore_id))
    except IntegrityError:
        # A concurrent request with the same key committed first: answer with its restore.
        existing = idempotent_restore(idempotency_key, digest)
        if existing is None:
            raise
        return existing
    return restore


def restore_request(
    *,
    snapshot_id: Any,
    selection: Selection,
    created_by: str | None,
    idempotency_key: str | None = None,
    enqueue: bool = True,
) -> Restore:
    """A plain restore (plan + execute in one job) of ``selection`` of a snapshot."""
    snapshot = snapshot_get(snapshot_id=snapshot_id)
    digest = request_digest(op="restore", snapshot=str(snapshot.pk), selection=selection.to_json())
    return _request(
        kind=Restore.Kind.RESTORE,
        snapshot=snapshot,
        plan=None,
        reverts=None,
        selection=selection,
        claim_ids=lambda: writable_pv_ids(snapshot=snapshot, selection=selection),
        created_by=created_by,
        idempotency_key=idempotency_key,
        digest=digest,
        enqueue=enqueue,
    )


def restore_plan_execute_request(
    *,
    plan_id: Any,
    created_by: str | None,
    idempotency_key: str | None = None,
    enqueue: bool = True,
) -> Restore:
    """Execute exactly a stored plan; Conflict when it is too old or was executed already."""
    plan = restore_plan_get(plan_id=plan_id)
    digest = request_digest(op="execute", plan=str(plan.pk))
    existing = idempotent_restore(idempotency_key, digest)
    if existing is not None:
        return existing
    age = plan_age(plan)
    if age > settings.PLAN_MAX_AGE:
        raise Conflict(
            f"Restore plan {plan.pk} is {age:.0f} s old (at most {settings.PLAN_MAX_AGE:.0f} s "
            "allowed); make a new plan"
        )
    done = Restore.objects.filter(plan=plan).first()
    if done is not None:
        raise Conflict(f"Restore plan {plan.pk} was already executed by restore {done.pk}")
    selection = Selection.stored(plan.pv_ids, plan.tag_filters)
    return _request(
        kind=Restore.Kind.RESTORE,
        snapshot=plan.snapshot,
        plan=plan,
        reverts=None,
        selection=selection,
        claim_ids=lambda: plan.items.filter(action=PlanAction.WRITE).values_list(
            "pv_id", flat=True
        ),
        created_by=created_by,
        idempotency_key=idempotency_key,
        digest=digest,
        enqueue=enqueue,
    )


def restore_revert_request(
    *,
    restore_id: Any,
    created_by: str | None,
    idempotency_key: str | None = None,
    enqueue: bool = True,
) -> Restore:
    """Restore the safety snapshot a finished restore took, through the same verified path."""
    restore_reap_orphans()
    original = restore_get(restore_id=restore_id)
    digest = request_digest(op="revert", restore=str(original.pk))
    existing = idempotent_restore(idempotency_key, digest)
    if existing is not None:
        return existing
    if original.status not in (Restore.Status.COMPLETED, Restore.Status.FAILED):
        raise Conflict(f"Restore {original.pk} is still {original.status}; revert it when done")
    safety = original.safety_snapshot
    if safety is None:
        raise Conflict(f"Restore {original.pk} wrote nothing, so there is nothing to revert")
    selection = Selection()
    return _request(
        kind=Restore.Kind.REVERT,
        snapshot=safety,
        plan=None,
        reverts=original,
        selection=selection,
        claim_ids=lambda: writable_pv_ids(snapshot=safety, selection=selection),
        created_by=created_by,
        idempotency_key=idempotency_key,
        digest=digest,
        enqueue=enqueue,
    )
