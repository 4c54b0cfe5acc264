"""The audit record of a restore: outcome names and order, the plan items and outcomes as
rows (COPY), counts, the job's result, and the reads that list them for the API.
"""

from __future__ import annotations

import json
import math
import time
import uuid
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from django.db import connection
from django.db.models import Case, Count, IntegerField, QuerySet, Value, When

from monitor import values
from snapshots.models import (
    Outcome,
    PlanAction,
    Restore,
    RestoreOutcome,
    RestorePlan,
    RestorePlanItem,
)
from squirrel import audit
from squirrel.api import dumps
from squirrel.auth import ANONYMOUS
from squirrel.exceptions import NotFound

MAX_FAILURES_IN_RESULT = 50

OUTCOME_NAMES: dict[int, str] = {int(v): str(label) for v, label in Outcome.choices}
OUTCOME_BY_NAME: dict[str, int] = {name: value for value, name in OUTCOME_NAMES.items()}
# A failure is a PV that should have been written and is not verified at its saved value. Of
# those, UNKNOWN_OUTCOMES were sent and may have been applied: reported as unknown, not failed.
FAILED_OUTCOMES = (
    Outcome.MISMATCH,
    Outcome.WRITE_FAILED,
    Outcome.WRITE_UNKNOWN,
    Outcome.TIMED_OUT,
    Outcome.DISCONNECTED,
    Outcome.INTERRUPTED,
    Outcome.NOT_ATTEMPTED,
)
# A success is a setpoint written and read back at its saved value, whatever its readback does;
# of those, WARNING_OUTCOMES have a readback that differs: reported apart, never as failures.
SUCCESS_OUTCOMES = (Outcome.VERIFIED, Outcome.READBACK_DIFFERS)
WARNING_OUTCOMES = (Outcome.READBACK_DIFFERS,)
# Order of outcomes in listings: failures first, so that none is buried in 50K rows.
OUTCOME_ORDER = (*FAILED_OUTCOMES, Outcome.READBACK_DIFFERS, Outcome.VERIFIED) + (
    Outcome.SKIPPED_EQUAL,
    Outcome.SKIPPED_READ_ONLY,
    Outcome.SKIPPED_NO_VALUE,
    Outcome.SKIPPED_NOT_PERMITTED,
)
UNKNOWN_OUTCOMES = (Outcome.WRITE_UNKNOWN,)
SKIP_OUTCOME = {
    PlanAction.SKIP_EQUAL: Outcome.SKIPPED_EQUAL,
    PlanAction.SKIP_READ_ONLY: Outcome.SKIPPED_READ_ONLY,
    PlanAction.SKIP_NO_VALUE: Outcome.SKIPPED_NO_VALUE,
    PlanAction.DISCONNECTED: Outcome.DISCONNECTED,
    PlanAction.SKIP_NOT_PERMITTED: Outcome.SKIPPED_NOT_PERMITTED,
}


class RestoreAborted(Exception):
    """The restore row is no longer running (failed by the orphan reaper): stop writing."""


@dataclass(slots=True)
class Item:
    """One plan item as the execution writes and judges it (``saved`` in wire form)."""

    id: int
    pv_id: uuid.UUID | None
    pv_name: str
    setpoint_address: str | None
    readback_address: str | None
    action: int
    abs_tol: float
    rel_tol: float
    saved: Any
    note: str | None
    stage: int = 0
    completion_timeout: float | None = None


@dataclass(slots=True)
class Result:
    """What happened to one item: its outcome and the values written and read back."""

    item: Item
    outcome: int
    written: Any = None
    setpoint: Any = None
    readback: Any = None
    error: str | None = None


def copy_rows(table: str, columns: Sequence[str], rows: Iterable[Sequence[Any]]) -> None:
    """COPY ``rows`` into ``table`` on the default connection (inside the caller's
    transaction)."""
    sql = f"COPY {table} ({', '.join(columns)}) FROM STDIN"
    with connection.cursor() as cursor, cursor.copy(sql) as copy:
        for row in rows:
            copy.write_row(row)


def json_text(value: Any) -> str | None:
    """A value as stored JSON text (fast path for the common finite float)."""
    if value is None:
        return None
    if type(value) is float and math.isfinite(value):
        return repr(value)
    return dumps(values.finite(value))


def items_load(plan: RestorePlan) -> list[Item]:
    rows = (
        RestorePlanItem.objects.filter(plan=plan)
        .order_by("id")
        .values_list(
            "id",
            "pv_id",
            "pv_name",
            "setpoint_address",
            "readback_address",
            "action",
            "abs_tolerance",
            "rel_tolerance",
            "saved",
            "note",
            "stage",
            "completion_timeout",
        )
    )
    return [
        Item(
            id=r[0],
            pv_id=r[1],
            pv_name=r[2],
            setpoint_address=r[3],
            readback_address=r[4],
            action=r[5],
            abs_tol=r[6],
            rel_tol=r[7],
            saved=json.loads(r[8]) if r[8] is not None else None,
            note=r[9],
            stage=r[10],
            completion_timeout=r[11],
        )
        for r in rows
    ]


_OUTCOME_COLUMNS = (
    "restore_id",
    "item_id",
    "pv_id",
    "pv_name",
    "outcome",
    "written",
    "setpoint_read",
    "readback_read",
    "error",
    "stage",
)


def outcomes_write(restore_id: Any, results: Iterable[Result]) -> None:
    """COPY outcomes of ``restore_id`` inside the caller's transaction, holding the restore
    row FOR KEY SHARE: what the missing foreign key would check per row (models BULK_CHILD)."""
    with connection.cursor() as cursor:
        cursor.execute("SELECT 1 FROM restore WHERE id = %s FOR KEY SHARE", [restore_id])
        if cursor.fetchone() is None:
            raise RestoreAborted(f"Restore {restore_id} no longer exists; outcomes not recorded")
    copy_rows(
        RestoreOutcome._meta.db_table,
        _OUTCOME_COLUMNS,
        (
            (
                restore_id,
                r.item.id,
                r.item.pv_id,
                r.item.pv_name,
                r.outcome,
                json_text(r.written),
                json_text(r.setpoint),
                json_text(r.readback),
                r.error,
                r.item.stage,
            )
            for r in results
        ),
    )


class Clock:
    """Seconds spent per phase, accumulated (for the audit record and the benchmark)."""

    def __init__(self) -> None:
        self.laps: dict[str, float] = {}
        self._last = time.perf_counter()

    def lap(self, phase: str) -> None:
        now = time.perf_counter()
        self.laps[phase] = round(self.laps.get(phase, 0.0) + now - self._last, 3)
        self._last = now


def summary_store(restore: Restore, times: dict[int, dict[str, str]] | None = None) -> Restore:
    """Counts by outcome, overall and per restore stage (with the stages' start and end
    ``times`` when known), from the outcome rows, onto the Restore row."""
    by_stage: dict[int, dict[int, int]] = {}
    grouped: dict[int, int] = {}
    for stage, outcome, n in (
        RestoreOutcome.objects.filter(restore=restore)
        .values_list("stage", "outcome")
        .annotate(n=Count("id"))
        .values_list("stage", "outcome", "n")
    ):
        by_stage.setdefault(stage, {})[outcome] = n
        grouped[outcome] = grouped.get(outcome, 0) + n
    restore.stages = [
        {
            "stage": stage,
            "successCount": sum(counts.get(o, 0) for o in SUCCESS_OUTCOMES),
            "failureCount": sum(counts.get(o, 0) for o in FAILED_OUTCOMES),
            "notAttempted": counts.get(Outcome.NOT_ATTEMPTED, 0),
            "counts": {OUTCOME_NAMES[o]: n for o, n in sorted(counts.items())},
            "startedAt": (times or {}).get(stage, {}).get("startedAt"),
            "finishedAt": (times or {}).get(stage, {}).get("finishedAt"),
        }
        for stage, counts in sorted(by_stage.items())
    ]
    restore.counts = {OUTCOME_NAMES[o]: grouped.get(o, 0) for o in OUTCOME_ORDER}
    restore.success_count = sum(grouped.get(o, 0) for o in SUCCESS_OUTCOMES)
    restore.failure_count = sum(grouped.get(o, 0) for o in FAILED_OUTCOMES)
    restore.total = restore.success_count + restore.failure_count
    return restore


def unknown_count(restore: Restore) -> int:
    """How many of the restore's failures are unknown (sent, maybe applied): from its counts."""
    counts = restore.counts or {}
    return sum(counts.get(OUTCOME_NAMES[o], 0) for o in UNKNOWN_OUTCOMES)


def warning_count(restore: Restore) -> int:
    """How many restored PVs have a readback that differs (a warning): from its counts."""
    counts = restore.counts or {}
    return sum(counts.get(OUTCOME_NAMES[o], 0) for o in WARNING_OUTCOMES)


def restore_result_message(
    *, total: int, success: int, failed: int, unknown: int = 0, warnings: int = 0
) -> str:
    """The job message of the contract (§5.2): setpoint failures first; of the ``failed`` (not
    verified), ``unknown`` ones are said to be unknown, not failed; readback ``warnings`` come
    after, apart: ``Restored 7/9 PVs (1 failed, 1 unknown); 2 readbacks differ (warnings)``."""
    if failed == 0:
        message = f"All {total:,} PVs have been restored to their snapshot values."
    else:
        parts = [f"{failed - unknown:,} failed"] if failed > unknown else []
        parts += [f"{unknown:,} unknown"] if unknown else []
        message = f"Restored {success:,}/{total:,} PVs ({', '.join(parts)})"
    if warnings:
        noun = "readback differs" if warnings == 1 else "readbacks differ"
        message = f"{message.rstrip('.')}; {warnings:,} {noun} from the setpoint (warnings)"
    return message


def failures_list(*, restore: Restore, limit: int = MAX_FAILURES_IN_RESULT) -> list[dict]:
    """The first ``limit`` failed PVs, in the contract's ``{pvId, pvName, error}`` shape plus
    the outcome."""
    rows = (
        RestoreOutcome.objects.filter(restore=restore, outcome__in=FAILED_OUTCOMES)
        .order_by("outcome", "pv_name")
        .values_list("pv_id", "pv_name", "outcome", "error")[:limit]
    )
    return [
        {
            "pvId": str(pv_id) if pv_id else None,
            "pvName": name,
            "outcome": OUTCOME_NAMES[outcome],
            "error": error or OUTCOME_NAMES[outcome],
        }
        for pv_id, name, outcome, error in rows
    ]


def restore_result(restore: Restore) -> dict[str, Any]:
    """``jobData.result`` of a restore job (contract §5.2, plus counts and links)."""
    return {
        "total_pvs": restore.total,
        "success_count": restore.success_count,
        "failure_count": restore.failure_count,
        "unknown_count": unknown_count(restore),
        "warning_count": warning_count(restore),
        "failures": failures_list(restore=restore),
        "counts": restore.counts,
        "restoreId": str(restore.pk),
        "planId": str(restore.plan_id) if restore.plan_id else None,
        "safetySnapshotId": str(restore.safety_snapshot_id) if restore.safety_snapshot_id else None,
        "timings": restore.timings,
        "stopOnFailure": restore.stop_on_failure,
        "stages": restore.stages,
    }


def row_get(queryset: QuerySet, raw_id: Any, label: str) -> Any:
    """The row of ``queryset`` with id ``raw_id``; NotFound (404) for a malformed id too."""
    try:
        pk = uuid.UUID(str(raw_id))
    except ValueError:
        raise NotFound(f"{label} {raw_id} not found") from None
    row = queryset.filter(pk=pk).first()
    if row is None:
        raise NotFound(f"{label} {raw_id} not found")
    return row


def restore_get(*, restore_id: Any) -> Restore:
    return row_get(Restore.objects.select_related("job"), restore_id, "Restore")


def plan_items_rows(
    *, plan: RestorePlan, action: int | None, limit: int | None, offset: int
) -> Iterable[tuple]:
    """Plan items as raw tuples, writes first, then by stage and name (no model instances)."""
    qs = RestorePlanItem.objects.filter(plan=plan)
    if action is not None:
        qs = qs.filter(action=action)
    rows = qs.order_by("action", "stage", "pv_name", "id").values_list(
        "pv_id",
        "pv_name",
        "setpoint_address",
        "readback_address",
        "action",
        "saved",
        "live",
        "delta",
        "note",
        "stage",
        "completion_timeout",
    )
    if limit is not None:
        return rows[offset : offset + limit].iterator(chunk_size=5000)
    return rows[offset:].iterator(chunk_size=5000) if offset else rows.iterator(chunk_size=5000)


def outcome_rows(
    *, restore: Restore, outcome: int | None, limit: int | None, offset: int
) -> Iterable[tuple]:
    """Outcome rows as raw tuples, failures first (OUTCOME_ORDER), then by name."""
    qs = RestoreOutcome.objects.filter(restore=restore)
    if outcome is not None:
        qs = qs.filter(outcome=outcome)
    rank = Case(
        *(When(outcome=o, then=Value(i)) for i, o in enumerate(OUTCOME_ORDER)),
        output_field=IntegerField(),
    )
    rows = (
        qs.annotate(rank=rank)
        .order_by("rank", "pv_name", "id")
        .values_list(
            "pv_id",
            "pv_name",
            "outcome",
            "written",
            "setpoint_read",
            "readback_read",
            "error",
            "stage",
        )
    )
    end = offset + limit if limit is not None else None
    return rows[offset:end].iterator(chunk_size=5000)


def restore_finish_record(restore: Restore) -> None:
    """The audit event of a restore's end (inside the transaction that finishes it), named
    after the identity that asked for it."""
    audit.record(
        restore.created_by or ANONYMOUS,
        f"{restore.kind}.{'complete' if restore.status == Restore.Status.COMPLETED else 'fail'}",
        restore,
        summary=restore_result_message(
            total=restore.total,
            success=restore.success_count,
            failed=restore.failure_count,
            unknown=unknown_count(restore),
            warnings=warning_count(restore),
        ),
        detail={
            "status": restore.status,
            "snapshotId": str(restore.snapshot_id) if restore.snapshot_id else None,
            "planId": str(restore.plan_id) if restore.plan_id else None,
            "safetySnapshotId": (
                str(restore.safety_snapshot_id) if restore.safety_snapshot_id else None
            ),
            "counts": restore.counts,
            "stopOnFailure": restore.stop_on_failure,
            "stages": restore.stages,
            "error": restore.error,
        },
    )
