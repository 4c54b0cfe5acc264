"""Restore request and response shapes: the serializers the OpenAPI schema describes and,
beside each, the hand-built DTO the views answer with (``tests/test_dto_shapes.py`` checks that
their keys match).

Plan items and per-PV outcomes (up to 50K rows) are built as JSON text from raw rows, their
stored JSON values embedded as they are.
"""

from __future__ import annotations

from typing import Any

from django.conf import settings
from rest_framework import serializers

from snapshots.models import Outcome, PlanAction, Restore, RestorePlan
from snapshots.restore.plan import ACTION_NAMES, plan_age
from snapshots.restore.records import (
    OUTCOME_NAMES,
    failures_list,
    unknown_count,
    warning_count,
)
from snapshots.restore.request import restore_queued_message
from snapshots.serializers import JobCreatedOutSerializer
from squirrel.api import dumps

# --- request and response shapes, for the schema (the DTOs below are built by hand) ---------

ACTION_CHOICES = [str(label) for _, label in PlanAction.choices]
OUTCOME_CHOICES = [str(label) for _, label in Outcome.choices]
UNKNOWN_HELP = (
    "of failureCount (not verified), the PVs whose put was sent but never answered (the IOC "
    "died or hung first: outcome write-unknown): they may have been applied"
)
WARNING_HELP = (
    "of successCount (setpoint verified), the PVs whose readback differs from it (outcome "
    "readback-differs): information, not failures"
)


class RestoreSelectionSerializer(serializers.Serializer):
    """Which PVs of the snapshot a restore or plan covers; absent or empty body: all."""

    pvIds = serializers.ListField(child=serializers.UUIDField(), required=False, allow_null=True)
    tagFilters = serializers.ListField(
        child=serializers.ListField(child=serializers.UUIDField()),
        required=False,
        allow_null=True,
        help_text=(
            "groups of tag ids: a PV is selected when it has a tag of every group (also "
            "accepted: one flat list, or an object of group -> tag ids)"
        ),
    )


STOP_HELP = (
    "default false: after a restore stage with a failure, the later stages are not attempted "
    "(outcome not-attempted)"
)
APPROVAL_CHOICES = ["not-required", "awaiting-approval", "approved"]


class RestoreOptionsSerializer(RestoreSelectionSerializer):
    """A restore: which PVs, and whether to stop after a stage with a failure."""

    stopOnFailure = serializers.BooleanField(required=False, default=False, help_text=STOP_HELP)


class RestoreExecuteSerializer(serializers.Serializer):
    """The execution of a plan: whether to stop after a stage with a failure (body optional)."""

    stopOnFailure = serializers.BooleanField(required=False, default=False, help_text=STOP_HELP)


class PlanStageOutSerializer(serializers.Serializer):
    stage = serializers.IntegerField()
    total = serializers.IntegerField()
    write = serializers.IntegerField()


class RestoreStageOutSerializer(serializers.Serializer):
    stage = serializers.IntegerField()
    successCount = serializers.IntegerField()
    failureCount = serializers.IntegerField()
    notAttempted = serializers.IntegerField()
    counts = serializers.DictField(child=serializers.IntegerField())
    startedAt = serializers.DateTimeField(allow_null=True, help_text="null: not recorded")
    finishedAt = serializers.DateTimeField(allow_null=True)


class RestoreJobCreatedOutSerializer(JobCreatedOutSerializer):
    restoreId = serializers.UUIDField()


class RestoreFailureOutSerializer(serializers.Serializer):
    pvId = serializers.UUIDField(allow_null=True)
    pvName = serializers.CharField()
    outcome = serializers.ChoiceField(choices=OUTCOME_CHOICES)
    error = serializers.CharField()


class RestoreResultOutSerializer(serializers.Serializer):
    """RestoreResultDTO (contract §2.4, ``async=false``) plus counts and ids."""

    totalPVs = serializers.IntegerField()
    successCount = serializers.IntegerField()
    failureCount = serializers.IntegerField()
    unknownCount = serializers.IntegerField(help_text=UNKNOWN_HELP)
    warningCount = serializers.IntegerField(help_text=WARNING_HELP)
    failures = RestoreFailureOutSerializer(many=True)
    counts = serializers.DictField(child=serializers.IntegerField())
    restoreId = serializers.UUIDField()
    safetySnapshotId = serializers.UUIDField(allow_null=True)
    stopOnFailure = serializers.BooleanField(help_text=STOP_HELP)
    stages = RestoreStageOutSerializer(many=True)


class RestorePlanOutSerializer(serializers.Serializer):
    id = serializers.UUIDField()
    snapshotId = serializers.UUIDField()
    snapshotTitle = serializers.CharField()
    createdAt = serializers.DateTimeField()
    createdBy = serializers.CharField(allow_null=True)
    ageSeconds = serializers.FloatField()
    maxAgeSeconds = serializers.FloatField()
    executable = serializers.BooleanField()
    restoreId = serializers.UUIDField(allow_null=True)
    pvIds = serializers.ListField(child=serializers.UUIDField(), allow_null=True)
    tagFilters = serializers.ListField(child=serializers.ListField(child=serializers.UUIDField()))
    total = serializers.IntegerField()
    counts = serializers.DictField(child=serializers.IntegerField())
    elapsedSeconds = serializers.FloatField()
    stages = PlanStageOutSerializer(many=True)
    approval = serializers.ChoiceField(choices=APPROVAL_CHOICES)
    approvedBy = serializers.CharField(allow_null=True)
    approvedAt = serializers.DateTimeField(allow_null=True)
    permittedTagIds = serializers.ListField(child=serializers.UUIDField(), allow_null=True)


class RestorePlanItemOutSerializer(serializers.Serializer):
    pvId = serializers.UUIDField(allow_null=True)
    pvName = serializers.CharField()
    setpointAddress = serializers.CharField(allow_null=True)
    readbackAddress = serializers.CharField(allow_null=True)
    action = serializers.ChoiceField(choices=ACTION_CHOICES)
    delta = serializers.FloatField(allow_null=True)
    note = serializers.CharField(allow_null=True)
    stage = serializers.IntegerField()
    completionTimeout = serializers.FloatField(allow_null=True)
    savedValue = serializers.JSONField(allow_null=True)
    liveValue = serializers.JSONField(allow_null=True)


class RestorePlanDetailOutSerializer(RestorePlanOutSerializer):
    items = RestorePlanItemOutSerializer(many=True)


class RestoreOutSerializer(serializers.Serializer):
    id = serializers.UUIDField()
    kind = serializers.ChoiceField(choices=Restore.Kind.choices)
    status = serializers.ChoiceField(choices=Restore.Status.choices)
    jobId = serializers.UUIDField(allow_null=True)
    snapshotId = serializers.UUIDField(allow_null=True)
    snapshotTitle = serializers.CharField(allow_blank=True)
    planId = serializers.UUIDField(allow_null=True)
    safetySnapshotId = serializers.UUIDField(allow_null=True)
    revertsId = serializers.UUIDField(allow_null=True)
    createdBy = serializers.CharField(allow_null=True)
    createdAt = serializers.DateTimeField()
    startedAt = serializers.DateTimeField(allow_null=True)
    finishedAt = serializers.DateTimeField(allow_null=True)
    heartbeatAt = serializers.DateTimeField(allow_null=True)
    pvIds = serializers.ListField(child=serializers.UUIDField(), allow_null=True)
    tagFilters = serializers.ListField(child=serializers.ListField(child=serializers.UUIDField()))
    attempted = serializers.IntegerField()
    total = serializers.IntegerField()
    successCount = serializers.IntegerField()
    failureCount = serializers.IntegerField()
    unknownCount = serializers.IntegerField(help_text=UNKNOWN_HELP)
    warningCount = serializers.IntegerField(help_text=WARNING_HELP)
    counts = serializers.DictField(child=serializers.IntegerField())
    error = serializers.CharField(allow_null=True)
    stopOnFailure = serializers.BooleanField(help_text=STOP_HELP)
    stages = RestoreStageOutSerializer(many=True)
    permittedTagIds = serializers.ListField(child=serializers.UUIDField(), allow_null=True)


class RestoreOutcomeOutSerializer(serializers.Serializer):
    pvId = serializers.UUIDField(allow_null=True)
    pvName = serializers.CharField()
    outcome = serializers.ChoiceField(choices=OUTCOME_CHOICES)
    error = serializers.CharField(allow_null=True)
    stage = serializers.IntegerField()
    written = serializers.JSONField(allow_null=True)
    setpointRead = serializers.JSONField(allow_null=True)
    readbackRead = serializers.JSONField(allow_null=True)


class RestoreDetailOutSerializer(RestoreOutSerializer):
    outcomes = RestoreOutcomeOutSerializer(many=True)


# --- the DTOs ----------------------------------------------------------------------------


def _iso(value: Any) -> str | None:
    return value.isoformat() if value is not None else None


def job_created_dto(restore: Restore) -> dict[str, Any]:
    """JobCreatedDTO (contract §2.4) plus the restore's id."""
    return {
        "jobId": str(restore.job_id),
        "message": restore_queued_message(restore.snapshot_id),
        "restoreId": str(restore.pk),
    }


def plan_approval(plan: RestorePlan) -> str:
    """``not-required`` (made with the restore scope), ``awaiting-approval`` or ``approved``."""
    if not plan.needs_approval:
        return "not-required"
    return "approved" if plan.approved_at is not None else "awaiting-approval"


def _ids(ids: list[Any] | None) -> list[str] | None:
    return [str(i) for i in ids] if ids is not None else None


def plan_dto(plan: RestorePlan) -> dict[str, Any]:
    age = plan_age(plan)
    approval = plan_approval(plan)
    executed = plan.restores.values_list("id", flat=True).first()
    return {
        "id": str(plan.pk),
        "snapshotId": str(plan.snapshot_id),
        "snapshotTitle": plan.snapshot.title,
        "createdAt": _iso(plan.created_at),
        "createdBy": plan.created_by,
        "ageSeconds": round(age, 3),
        "maxAgeSeconds": settings.PLAN_MAX_AGE,
        "executable": executed is None
        and age <= settings.PLAN_MAX_AGE
        and approval != "awaiting-approval",
        "restoreId": str(executed) if executed else None,
        "pvIds": [str(p) for p in plan.pv_ids] if plan.pv_ids is not None else None,
        "tagFilters": plan.tag_filters or [],
        "total": plan.total,
        "counts": plan.counts,
        "elapsedSeconds": round(plan.elapsed, 3),
        "stages": plan.stages,
        "approval": approval,
        "approvedBy": plan.approved_by,
        "approvedAt": _iso(plan.approved_at),
        "permittedTagIds": _ids(plan.permitted_tag_ids),
    }


def restore_dto(restore: Restore) -> dict[str, Any]:
    return {
        "id": str(restore.pk),
        "kind": restore.kind,
        "status": restore.status,
        "jobId": str(restore.job_id) if restore.job_id else None,
        "snapshotId": str(restore.snapshot_id) if restore.snapshot_id else None,
        "snapshotTitle": restore.snapshot_title,
        "planId": str(restore.plan_id) if restore.plan_id else None,
        "safetySnapshotId": (
            str(restore.safety_snapshot_id) if restore.safety_snapshot_id else None
        ),
        "revertsId": str(restore.reverts_id) if restore.reverts_id else None,
        "createdBy": restore.created_by,
        "createdAt": _iso(restore.created_at),
        "startedAt": _iso(restore.started_at),
        "finishedAt": _iso(restore.finished_at),
        "heartbeatAt": _iso(restore.heartbeat_at),
        "pvIds": [str(p) for p in restore.pv_ids] if restore.pv_ids is not None else None,
        "tagFilters": restore.tag_filters or [],
        "attempted": restore.attempted,
        "total": restore.total,
        "successCount": restore.success_count,
        "failureCount": restore.failure_count,
        "unknownCount": unknown_count(restore),
        "warningCount": warning_count(restore),
        "counts": restore.counts,
        "error": restore.error,
        "stopOnFailure": restore.stop_on_failure,
        "stages": restore.stages,
        "permittedTagIds": _ids(restore.permitted_tag_ids),
    }


def restore_result_dto(restore: Restore) -> dict[str, Any]:
    """RestoreResultDTO (contract §2.4, sync restore) plus counts and ids."""
    return {
        "totalPVs": restore.total,
        "successCount": restore.success_count,
        "failureCount": restore.failure_count,
        "unknownCount": unknown_count(restore),
        "warningCount": warning_count(restore),
        "failures": failures_list(restore=restore),
        "counts": restore.counts,
        "restoreId": str(restore.pk),
        "safetySnapshotId": (
            str(restore.safety_snapshot_id) if restore.safety_snapshot_id else None
        ),
        "stopOnFailure": restore.stop_on_failure,
        "stages": restore.stages,
    }


def _raw(text: str | None) -> str:
    return text if text is not None else "null"


def plan_item_json(row: tuple) -> str:
    pv_id, name, sp, rb, action, saved, live, delta, note, stage, timeout = row
    head = dumps(
        {
            "pvId": str(pv_id) if pv_id else None,
            "pvName": name,
            "setpointAddress": sp,
            "readbackAddress": rb,
            "action": ACTION_NAMES[action],
            "delta": delta,
            "note": note,
            "stage": stage,
            "completionTimeout": timeout,
        }
    )
    return f'{head[:-1]},"savedValue":{_raw(saved)},"liveValue":{_raw(live)}}}'


def outcome_json(row: tuple) -> str:
    pv_id, name, outcome, written, sp, rb, error, stage = row
    head = dumps(
        {
            "pvId": str(pv_id) if pv_id else None,
            "pvName": name,
            "outcome": OUTCOME_NAMES[outcome],
            "error": error,
            "stage": stage,
        }
    )
    return (
        f'{head[:-1]},"written":{_raw(written)},"setpointRead":{_raw(sp)},'
        f'"readbackRead":{_raw(rb)}}}'
    )
