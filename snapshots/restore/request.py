"""Restore requests: the audit row, its Job and the claims in ONE transaction, the task enqueued
on commit (a plain restore, the execution of a stored plan, or the revert of a restore), and
the approval of a plan made without the restore scope. Each is an audit event too.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Sequence
from typing import Any

from celery import current_app
from django.conf import settings
from django.db import IntegrityError, transaction
from django.db.models import QuerySet
from django.utils import timezone

from jobs import services as jobs
from jobs.models import Job
from pvs.models import PV
from snapshots.models import PlanAction, Restore, RestorePlan, Snapshot
from snapshots.restore.claims import idempotent_restore, pvs_claim, request_digest
from snapshots.restore.plan import plan_age, restore_plan_get, writable_pv_ids
from snapshots.restore.records import restore_get
from snapshots.restore.run import restore_reap_orphans
from snapshots.restore.selection import Selection
from snapshots.services import snapshot_get
from squirrel import audit
from squirrel.auth import ANONYMOUS
from squirrel.exceptions import Conflict, NotPermitted

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
    actor: str | None,
    stop_on_failure: bool = False,
    permitted_tag_ids: Sequence[uuid.UUID] | None = None,
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
                stop_on_failure=stop_on_failure,
                permitted_tag_ids=list(permitted_tag_ids)
                if permitted_tag_ids is not None
                else None,
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
            audit.record(
                actor or ANONYMOUS,
                f"{kind}.request",
                restore,
                summary=f"{kind} of '{snapshot.title}'",
                detail={
                    "snapshotId": str(snapshot.pk),
                    "planId": str(plan.pk) if plan else None,
                    "revertsId": str(reverts.pk) if reverts else None,
                    "stopOnFailure": stop_on_failure,
                    "selection": selection.to_json(),
                    "permittedTagIds": [str(t) for t in permitted_tag_ids]
                    if permitted_tag_ids is not None
                    else None,
                },
            )
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
    stop_on_failure: bool = False,
    permitted_tag_ids: Sequence[uuid.UUID] | None = None,
    actor: str | None = None,
) -> Restore:
    """A plain restore (plan + execute in one job) of ``selection`` of a snapshot; the PVs
    outside ``permitted_tag_ids`` (when given) are skipped-not-permitted."""
    snapshot = snapshot_get(snapshot_id=snapshot_id)
    digest = request_digest(
        op="restore",
        snapshot=str(snapshot.pk),
        selection=selection.to_json(),
        stop=stop_on_failure,
        permitted=sorted(str(t) for t in permitted_tag_ids or []),
    )
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
        actor=actor,
        stop_on_failure=stop_on_failure,
        permitted_tag_ids=permitted_tag_ids,
    )


def plan_writes_outside(plan: RestorePlan, tag_ids: Sequence[uuid.UUID] | None) -> int:
    """How many of the plan's writes fall outside ``tag_ids`` (None: no limit, 0)."""
    if tag_ids is None:
        return 0
    inside = PV.objects.with_any_tag(list(tag_ids) or [uuid.UUID(int=0)]).values("id")
    return plan.items.filter(action=PlanAction.WRITE).exclude(pv_id__in=inside).count()


def _permitted_check(plan: RestorePlan, tag_ids: Sequence[uuid.UUID] | None, verb: str) -> None:
    outside = plan_writes_outside(plan, tag_ids)
    if outside:
        raise NotPermitted(
            f"Cannot {verb} restore plan {plan.pk}: {outside} of its writes are outside the "
            "tags this caller may restore"
        )


def restore_plan_approve(
    *,
    plan_id: Any,
    approved_by: str,
    permitted_tag_ids: Sequence[uuid.UUID] | None = None,
    actor: str | None = None,
) -> RestorePlan:
    """Approve a plan awaiting approval (by a caller with the restore scope): it becomes
    executable, by its maker or by the approver. Conflict when it needs no approval, was
    approved already, was executed or is too old; 401 when it writes PVs outside the
    approver's tags."""
    with transaction.atomic():
        plan = restore_plan_get(plan_id=plan_id)
        plan = RestorePlan.objects.select_for_update().select_related("snapshot").get(pk=plan.pk)
        if not plan.needs_approval:
            raise Conflict(f"Restore plan {plan.pk} needs no approval")
        if plan.approved_at is not None:
            raise Conflict(f"Restore plan {plan.pk} was approved by {plan.approved_by} already")
        _executable_check(plan)
        _permitted_check(plan, permitted_tag_ids, "approve")
        plan.approved_by = approved_by
        plan.approved_at = timezone.now()
        plan.save(update_fields=["approved_by", "approved_at"])
        audit.record(
            actor or approved_by,
            "restore_plan.approve",
            plan,
            summary=f"plan of '{plan.snapshot.title}' made by {plan.created_by or ANONYMOUS}",
            detail={
                "approvedBy": approved_by,
                "approvedAt": plan.approved_at.isoformat(),
                "createdBy": plan.created_by,
                "counts": plan.counts,
                "stages": plan.stages,
            },
        )
    return plan


def _executable_check(plan: RestorePlan) -> None:
    """Conflict when the plan is too old or was executed already."""
    age = plan_age(plan)
    if age > settings.PLAN_MAX_AGE:
        raise Conflict(
            f"Restore plan {plan.pk} is {age:.0f} s old (at most {settings.PLAN_MAX_AGE:.0f} s "
            "allowed); make a new plan"
        )
    done = Restore.objects.filter(plan=plan).first()
    if done is not None:
        raise Conflict(f"Restore plan {plan.pk} was already executed by restore {done.pk}")


def restore_plan_execute_request(
    *,
    plan_id: Any,
    created_by: str | None,
    may_restore: bool = True,
    permitted_tag_ids: Sequence[uuid.UUID] | None = None,
    idempotency_key: str | None = None,
    enqueue: bool = True,
    stop_on_failure: bool = False,
    actor: str | None = None,
) -> Restore:
    """Execute exactly a stored plan. Conflict when it is too old, was executed already, or
    awaits approval; 401 when the caller lacks the restore scope (``may_restore``) and the
    plan was not approved, or when it writes PVs outside the caller's tags."""
    plan = restore_plan_get(plan_id=plan_id)
    digest = request_digest(op="execute", plan=str(plan.pk), stop=stop_on_failure)
    existing = idempotent_restore(idempotency_key, digest)
    if existing is not None:
        return existing
    if plan.needs_approval and plan.approved_at is None:
        raise Conflict(
            f"Restore plan {plan.pk} is awaiting approval by a caller with the restore scope "
            f"(POST /v1/restore-plans/{plan.pk}/approve)"
        )
    if not may_restore and not plan.needs_approval:
        raise NotPermitted("API key does not have restore access")
    if may_restore:
        _permitted_check(plan, permitted_tag_ids, "execute")
    _executable_check(plan)
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
        actor=actor,
        stop_on_failure=stop_on_failure,
    )


def restore_revert_request(
    *,
    restore_id: Any,
    created_by: str | None,
    idempotency_key: str | None = None,
    enqueue: bool = True,
    permitted_tag_ids: Sequence[uuid.UUID] | None = None,
    actor: str | None = None,
) -> Restore:
    """Restore the safety snapshot a finished restore took, through the same verified path
    (PVs outside ``permitted_tag_ids``, when given, skipped-not-permitted)."""
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
        actor=actor,
        permitted_tag_ids=permitted_tag_ids,
    )
