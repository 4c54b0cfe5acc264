"""Restore that operators can trust (issue 5): plan, execute, verify, revert, audit.

1. **Plan** (``restore_plan_create``): for each selected PV of a snapshot, compare the saved
   setpoint with the *current* live value (the monitor's cache when the monitor is alive, else
   a direct Channel Access read) and decide ``write``, ``skip-equal`` (within the PV's
   tolerance, ``snapshots.tolerance.within_tolerance``), ``skip-read-only``, ``skip-no-value``
   or ``disconnected``. The plan and its items are stored (COPY).
2. **Request** (``restore_request`` / ``restore_plan_execute_request`` /
   ``restore_revert_request``): in ONE transaction create the Restore audit row, its Job and a
   claim on every PV it may write (``RestoreClaim``, primary key = PV id, conditional insert):
   an overlapping restore that is pending or running makes the second request a 409, and
   nothing of it is written. An ``Idempotency-Key`` maps to one Restore (unique column).
   The task is enqueued on commit.
3. **Run** (``restore_run``, the task's body): claim the Restore row (pending -> running,
   conditional UPDATE: a redelivered message never replays writes), build the plan if the
   request had none, capture a **safety snapshot** of exactly the PVs about to be written
   (``snapshots.capture.values_collect`` while the monitor is alive, else a direct read on
   the restore's own client; stored with ``snapshots.storage.snapshot_values_write``, kind
   ``safety``, linked to the Restore and committed before any write), then per chunk: note
   the chunk as attempted, put with completion, read back setpoints (and readbacks within
   tolerance, re-reading up to a settle time) and COPY the chunk's outcomes. A heartbeat thread
   keeps ``heartbeat_at`` fresh; ``restore_reap_orphans`` fails restores whose worker died,
   recording ``interrupted`` / ``not-attempted`` for what has no outcome.
4. **Revert** restores the safety snapshot through the same path.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import math
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from django.conf import settings
from django.core.exceptions import EmptyResultSet
from django.db import IntegrityError, connection, transaction
from django.db.models import Case, Count, IntegerField, QuerySet, Value, When
from django.utils import timezone

from jobs import services as jobs
from jobs.models import Job
from monitor import events, values
from pvs.models import PV
from snapshots.codec import RAW_SIDE, side_from_columns, side_from_entry
from snapshots.models import (
    Outcome,
    PlanAction,
    Restore,
    RestoreClaim,
    RestoreOutcome,
    RestorePlan,
    RestorePlanItem,
    Snapshot,
    SnapshotValue,
    ValueSource,
)
from snapshots.tolerance import within_tolerance
from squirrel.api import dumps
from squirrel.exceptions import Conflict, Invalid, NotFound, Unavailable
from squirrel.perf import gc_paused

log = logging.getLogger(__name__)

ProgressFn = Callable[[int, str | None], None]

# Tunables (candidates for settings: SQUIRREL_RESTORE_*).
CHUNK = 10_000  # PVs written, verified and recorded per step
SETTLE_TIME = 2.0  # seconds a readback may take to follow its setpoint
SETTLE_POLL = 0.2
HEARTBEAT_INTERVAL = 1.0
HEARTBEAT_STALE = 15.0  # a running restore without heartbeat this long has lost its worker
MAX_FAILURES_IN_RESULT = 50

ACTION_NAMES: dict[int, str] = {int(v): str(label) for v, label in PlanAction.choices}
ACTION_BY_NAME: dict[str, int] = {name: value for value, name in ACTION_NAMES.items()}
OUTCOME_NAMES: dict[int, str] = {int(v): str(label) for v, label in Outcome.choices}
OUTCOME_BY_NAME: dict[str, int] = {name: value for value, name in OUTCOME_NAMES.items()}
# A failure is a PV that should have been written and is not verified at its saved value.
FAILED_OUTCOMES = (
    Outcome.MISMATCH,
    Outcome.WRITE_FAILED,
    Outcome.TIMED_OUT,
    Outcome.DISCONNECTED,
    Outcome.INTERRUPTED,
    Outcome.NOT_ATTEMPTED,
)
# Order of outcomes in listings: failures first, so that none is buried in 50K rows.
OUTCOME_ORDER = (*FAILED_OUTCOMES, Outcome.VERIFIED) + (
    Outcome.SKIPPED_EQUAL,
    Outcome.SKIPPED_READ_ONLY,
    Outcome.SKIPPED_NO_VALUE,
)
SKIP_OUTCOME = {
    PlanAction.SKIP_EQUAL: Outcome.SKIPPED_EQUAL,
    PlanAction.SKIP_READ_ONLY: Outcome.SKIPPED_READ_ONLY,
    PlanAction.SKIP_NO_VALUE: Outcome.SKIPPED_NO_VALUE,
    PlanAction.DISCONNECTED: Outcome.DISCONNECTED,
}
NOT_IN_CATALOG = "PV is no longer in the catalog"
NO_SETPOINT = "PV has no setpoint address"
READ_ONLY = "PV is read-only"
NO_SAVED_VALUE = "snapshot holds no setpoint value"


def heartbeat_stale() -> float:
    return float(getattr(settings, "RESTORE_HEARTBEAT_STALE", HEARTBEAT_STALE))


def settle_time() -> float:
    return float(getattr(settings, "RESTORE_SETTLE_TIME", SETTLE_TIME))


# --- Selection ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Selection:
    """Which PVs of a snapshot: ``pv_ids`` (None = all) and tag filters (OR inside a group,
    AND across groups, as PVQuerySet.with_tag_filters)."""

    pv_ids: tuple[uuid.UUID, ...] | None = None
    tag_filters: tuple[tuple[uuid.UUID, ...], ...] = ()

    def to_json(self) -> dict[str, Any]:
        return {
            "pvIds": None if self.pv_ids is None else sorted(str(p) for p in self.pv_ids),
            "tagFilters": [sorted(str(t) for t in group) for group in self.tag_filters],
        }


def _uuid_list(raw: Any, loc: str) -> tuple[uuid.UUID, ...]:
    if not isinstance(raw, list):
        raise Invalid(
            f"Validation error: {loc}: must be a list of ids",
            [{"loc": ["body", loc], "msg": "Must be a list of ids", "type": "list_type"}],
        )
    out = []
    for index, item in enumerate(raw):
        try:
            out.append(uuid.UUID(str(item)))
        except ValueError:
            raise Invalid(
                f"Validation error: {loc}.{index}: {item!r} is not a valid id",
                [{"loc": ["body", loc, index], "msg": "Invalid UUID", "type": "uuid_parsing"}],
            ) from None
    return tuple(out)


def selection_parse(*, pv_ids: Any = None, tag_filters: Any = None) -> Selection:
    """A Selection from request data; Invalid (422) on malformed ids.

    ``tag_filters`` is a list of groups (each a list of tag ids) or a mapping of group name to
    tag ids; a flat list of ids is one group.
    """
    ids = None if pv_ids is None else _uuid_list(pv_ids, "pvIds")
    groups: list[tuple[uuid.UUID, ...]] = []
    if tag_filters is not None:
        if isinstance(tag_filters, dict):
            raw_groups = list(tag_filters.values())
        elif isinstance(tag_filters, list) and all(not isinstance(g, list) for g in tag_filters):
            raw_groups = [tag_filters]
        elif isinstance(tag_filters, list):
            raw_groups = tag_filters
        else:
            raise Invalid(
                "Validation error: tagFilters: must be a list of lists of tag ids",
                [{"loc": ["body", "tagFilters"], "msg": "Invalid", "type": "list_type"}],
            )
        groups = [_uuid_list(g, "tagFilters") for g in raw_groups]
    return Selection(pv_ids=ids, tag_filters=tuple(g for g in groups if g))


# --- Live values -------------------------------------------------------------------------------


def monitor_alive() -> bool:
    """Whether the monitor's heartbeat is recent: then its cache follows every PV."""
    raw = events.sync_redis().get(events.heartbeat_key())
    try:
        return raw is not None and time.time() - float(raw) <= settings.MONITOR_ALIVE_SECONDS
    except ValueError:
        return False


def live_entries(
    addresses: Sequence[str], *, ca: ChannelAccess | None = None
) -> dict[str, values.Entry]:
    """Current entries of ``addresses``: the monitor's cache (one HMGET) for connected PVs while
    the monitor is alive, a direct Channel Access read (on ``ca``, or a client of its own) for
    the others."""
    from monitor.events import values_read

    addresses = list(dict.fromkeys(addresses))
    found: dict[str, values.Entry] = {}
    if addresses and monitor_alive():
        for address, entry in values_read(addresses).items():
            if entry.get("connected") and not entry.get("error"):
                found[address] = entry
    missing = [a for a in addresses if a not in found]
    if not missing:
        return found
    try:
        if ca is not None:
            found.update(ca.read(missing, settings.EPICS_TIMEOUT))
        else:
            with ChannelAccess() as own:
                found.update(own.read(missing, settings.EPICS_TIMEOUT))
    except OSError as exc:
        raise Unavailable(f"Cannot read live values over Channel Access: {exc}") from exc
    return found


# --- Plans -------------------------------------------------------------------------------------


@dataclass(slots=True)
class _PlanRow:
    value_id: int
    pv_id: uuid.UUID | None
    pv_name: str
    setpoint_address: str | None
    readback_address: str | None
    action: int
    abs_tol: float
    rel_tol: float
    saved: Any
    live: Any = None
    delta: float | None = None
    note: str | None = None
    id: int = 0  # the RestorePlanItem id, once stored


def snapshot_get(*, snapshot_id: Any) -> Snapshot:
    try:
        sid = uuid.UUID(str(snapshot_id))
    except ValueError:
        raise NotFound(f"Snapshot {snapshot_id} not found") from None
    snapshot = Snapshot.objects.filter(pk=sid).first()
    if snapshot is None:
        raise NotFound(f"Snapshot {snapshot_id} not found")
    return snapshot


def _selected_values(*, snapshot: Snapshot, selection: Selection):
    qs = SnapshotValue.objects.filter(snapshot=snapshot)
    if selection.pv_ids is not None:
        qs = qs.filter(pv_id__in=selection.pv_ids)
    if selection.tag_filters:
        tagged = PV.objects.with_tag_filters([list(g) for g in selection.tag_filters])
        qs = qs.filter(pv_id__in=tagged.values("id"))
    return qs


def writable_pv_ids(*, snapshot: Snapshot, selection: Selection) -> QuerySet:
    """Ids of the PVs of the selection a restore may write: in the catalog, with a setpoint,
    not read-only (the superset of a plan's ``write`` items, claimed before planning)."""
    return (
        _selected_values(snapshot=snapshot, selection=selection)
        .filter(pv__isnull=False, pv__read_only=False, pv__setpoint_address__isnull=False)
        .exclude(pv__setpoint_address="")
        .values_list("pv_id", flat=True)
    )


def _numeric(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value) if math.isfinite(value) else None


def plan_rows_saved(
    *, snapshot: Snapshot, selection: Selection
) -> tuple[list[_PlanRow], list[_PlanRow]]:
    """Every selected PV with its saved setpoint, classified as far as the catalog allows:
    (all rows, the candidates still to compare with their live value)."""
    raw = (
        _selected_values(snapshot=snapshot, selection=selection)
        .order_by("pv_name", "id")
        .values_list(
            "id",
            "pv_id",
            "pv_name",
            "pv__setpoint_address",
            "pv__readback_address",
            "pv__read_only",
            "pv__abs_tolerance",
            "pv__rel_tolerance",
            *(f"sp_{c}" for c in RAW_SIDE),
        )
    )
    rows: list[_PlanRow] = []
    candidates: list[_PlanRow] = []
    for r in raw:
        (vid, pv_id, name, sp_addr, rb_addr, read_only, abs_tol, rel_tol) = r[:8]
        saved = side_from_columns(*r[8:15])
        row = _PlanRow(
            value_id=vid,
            pv_id=pv_id,
            pv_name=name,
            setpoint_address=sp_addr or None,
            readback_address=rb_addr if rb_addr and rb_addr != sp_addr else None,
            action=PlanAction.WRITE,
            abs_tol=abs_tol or 0.0,
            rel_tol=rel_tol or 0.0,
            saved=values.finite(saved.wire) if saved is not None else None,
        )
        if pv_id is None or read_only is None:
            row.action, row.note = PlanAction.SKIP_READ_ONLY, NOT_IN_CATALOG
        elif read_only:
            row.action, row.note = PlanAction.SKIP_READ_ONLY, READ_ONLY
        elif not sp_addr:
            row.action, row.note = PlanAction.SKIP_READ_ONLY, NO_SETPOINT
        elif row.saved is None:
            row.action, row.note = PlanAction.SKIP_NO_VALUE, NO_SAVED_VALUE
        else:
            candidates.append(row)
        rows.append(row)
    return rows, candidates


def plan_rows_classify(*, candidates: list[_PlanRow], live: dict[str, values.Entry]) -> None:
    """Set each candidate's action from its live setpoint entry: ``disconnected`` without a
    usable value, ``skip-equal`` within the PV's tolerance, else ``write``."""
    for row in candidates:
        entry = live.get(row.setpoint_address)  # type: ignore[arg-type]
        usable = entry is not None and entry.get("connected") and not entry.get("error")
        side = side_from_entry(entry) if usable else None
        current = values.finite(side.wire) if side is not None else None
        if current is None:
            row.action = PlanAction.DISCONNECTED
            row.note = (entry or {}).get("error") or values.DISCONNECTED
            continue
        row.live = current
        saved_num, live_num = _numeric(row.saved), _numeric(current)
        if saved_num is not None and live_num is not None:
            row.delta = abs(live_num - saved_num)
        if within_tolerance(row.saved, current, abs_tol=row.abs_tol, rel_tol=row.rel_tol):
            row.action = PlanAction.SKIP_EQUAL


def plan_rows_compute(*, snapshot: Snapshot, selection: Selection) -> list[_PlanRow]:
    """Classify every selected PV against its live setpoint (see the module docstring)."""
    rows, candidates = plan_rows_saved(snapshot=snapshot, selection=selection)
    live = live_entries([row.setpoint_address for row in candidates])  # type: ignore[misc]
    plan_rows_classify(candidates=candidates, live=live)
    return rows


def _counts(actions: Iterable[int], names: dict[int, str]) -> dict[str, int]:
    counts = dict.fromkeys(names.values(), 0)
    for action in actions:
        counts[names[action]] += 1
    return counts


_ITEM_COLUMNS = (
    "id",
    "plan_id",
    "value_id",
    "pv_id",
    "pv_name",
    "setpoint_address",
    "readback_address",
    "action",
    "abs_tolerance",
    "rel_tolerance",
    "saved",
    "live",
    "delta",
    "note",
)


def _copy(table: str, columns: Sequence[str], rows: Iterable[Sequence[Any]]) -> None:
    """COPY ``rows`` into ``table`` on the default connection (inside the caller's
    transaction)."""
    sql = f"COPY {table} ({', '.join(columns)}) FROM STDIN"
    with connection.cursor() as cursor, cursor.copy(sql) as copy:
        for row in rows:
            copy.write_row(row)


def _json(value: Any) -> str | None:
    """A value as stored JSON text (fast path for the common finite float)."""
    if value is None:
        return None
    if type(value) is float and math.isfinite(value):
        return repr(value)
    return dumps(values.finite(value))


def plan_store(
    *,
    snapshot: Snapshot,
    selection: Selection,
    rows: list[_PlanRow],
    created_by: str | None,
    elapsed: float,
) -> RestorePlan:
    """Save a plan and its items (COPY) in one transaction."""
    selected = selection.to_json()
    with transaction.atomic():
        plan = RestorePlan(
            snapshot=snapshot,
            created_by=created_by,
            pv_ids=list(selection.pv_ids) if selection.pv_ids is not None else None,
            tag_filters=selected["tagFilters"] or None,
            total=len(rows),
            counts=_counts((r.action for r in rows), ACTION_NAMES),
            elapsed=elapsed,
        )
        plan.full_clean()
        plan.save()
        # Ids drawn first (one query) so the caller keeps the items in memory with their ids.
        with connection.cursor() as cursor:
            cursor.execute(
                "SELECT nextval(pg_get_serial_sequence(%s, 'id')) FROM generate_series(1, %s)",
                [RestorePlanItem._meta.db_table, len(rows)],
            )
            for row, (item_id,) in zip(rows, cursor.fetchall(), strict=True):
                row.id = item_id
        _copy(
            RestorePlanItem._meta.db_table,
            _ITEM_COLUMNS,
            (
                (
                    r.id,
                    plan.pk,
                    r.value_id,
                    r.pv_id,
                    r.pv_name,
                    r.setpoint_address,
                    r.readback_address,
                    r.action,
                    r.abs_tol,
                    r.rel_tol,
                    _json(r.saved),
                    _json(r.live),
                    r.delta,
                    r.note,
                )
                for r in rows
            ),
        )
    return plan


@gc_paused()
def restore_plan_create(
    *, snapshot_id: Any, selection: Selection, created_by: str | None
) -> RestorePlan:
    """Compute and store the plan of restoring ``selection`` of a snapshot (a dry run)."""
    snapshot = snapshot_get(snapshot_id=snapshot_id)
    started = time.monotonic()
    rows = plan_rows_compute(snapshot=snapshot, selection=selection)
    return plan_store(
        snapshot=snapshot,
        selection=selection,
        rows=rows,
        created_by=created_by,
        elapsed=time.monotonic() - started,
    )


def restore_plan_get(*, plan_id: Any) -> RestorePlan:
    try:
        pid = uuid.UUID(str(plan_id))
    except ValueError:
        raise NotFound(f"Restore plan {plan_id} not found") from None
    plan = RestorePlan.objects.select_related("snapshot").filter(pk=pid).first()
    if plan is None:
        raise NotFound(f"Restore plan {plan_id} not found")
    return plan


def plan_age(plan: RestorePlan) -> float:
    return (timezone.now() - plan.created_at).total_seconds()


# --- Requests: audit row + job + claims in one transaction -----------------------------------


def _digest(**parts: Any) -> str:
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()


def restore_queued_message(snapshot_id: Any) -> str:
    return f"Snapshot restore queued ({snapshot_id})"


def _idempotent(key: str | None, digest: str) -> Restore | None:
    """The Restore an earlier request with this key created, or None; Conflict when the key
    was used for a different request."""
    if not key:
        return None
    existing = Restore.objects.filter(idempotency_key=key).first()
    if existing is None:
        return None
    if existing.request_digest != digest:
        raise Conflict(f"Idempotency-Key {key!r} was already used for a different request")
    return existing


def _claim(restore: Restore, pv_ids: QuerySet) -> None:
    """Claim the PVs of ``pv_ids`` (a queryset of PV ids) for ``restore`` inside the caller's
    transaction, in one statement on the server; Conflict (409) when another pending or
    running restore holds any of them.

    A plain INSERT that fails on the first PV already claimed (primary key = PV id), rolled
    back to a savepoint: a third cheaper than INSERT ... ON CONFLICT DO NOTHING with counts
    (165 against 250 ms for 45K PVs), and a conflict is the rare case. A concurrent claim of
    the same PV waits for the other transaction and then fails the same way.
    """
    try:
        sql, params = pv_ids.query.sql_with_params()
    except EmptyResultSet:  # an empty selection (pvIds: []): nothing to claim
        return
    try:
        with transaction.atomic(), connection.cursor() as cursor:
            cursor.execute(
                "INSERT INTO restore_claim (pv_id, restore_id) SELECT t.id, %s FROM "
                "(SELECT DISTINCT t.id FROM (" + sql + ") AS t(id) WHERE t.id IS NOT NULL) t "
                "ORDER BY t.id",
                [restore.pk, *params],
            )
    except IntegrityError:
        held = RestoreClaim.objects.filter(pv_id__in=pv_ids).exclude(restore=restore)
        other = held.values_list("restore_id", flat=True).first()
        raise Conflict(
            f"Restore {other} is already running over {held.count()} of these PVs; "
            "wait for it to finish"
        ) from None


def _release(restore_id: Any) -> None:
    RestoreClaim.objects.filter(restore_id=restore_id).delete()


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
    existing = _idempotent(idempotency_key, digest)
    if existing is not None:
        return existing
    from snapshots.restore_tasks import restore_run_task

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
            _claim(restore, claim_ids())
            if enqueue:
                restore_id = str(restore.pk)
                transaction.on_commit(lambda: restore_run_task.delay(restore_id))
    except IntegrityError:
        # A concurrent request with the same key committed first: answer with its restore.
        existing = _idempotent(idempotency_key, digest)
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
    digest = _digest(op="restore", snapshot=str(snapshot.pk), selection=selection.to_json())
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
    digest = _digest(op="execute", plan=str(plan.pk))
    existing = _idempotent(idempotency_key, digest)
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
    selection = Selection(
        pv_ids=tuple(plan.pv_ids) if plan.pv_ids is not None else None,
        tag_filters=tuple(tuple(uuid.UUID(t) for t in g) for g in plan.tag_filters or []),
    )
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


def restore_get(*, restore_id: Any) -> Restore:
    try:
        rid = uuid.UUID(str(restore_id))
    except ValueError:
        raise NotFound(f"Restore {restore_id} not found") from None
    restore = Restore.objects.select_related("job").filter(pk=rid).first()
    if restore is None:
        raise NotFound(f"Restore {restore_id} not found")
    return restore


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
    digest = _digest(op="revert", restore=str(original.pk))
    existing = _idempotent(idempotency_key, digest)
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


# --- Channel Access from synchronous code ------------------------------------------------------


@dataclass(frozen=True, slots=True)
class PutResult:
    ok: bool
    timed_out: bool = False
    error: str | None = None


def _put_result(raw: Any) -> PutResult:
    """monitor.ca's WriteResult as a PutResult."""
    if isinstance(raw, PutResult):
        return raw
    ok = bool(getattr(raw, "ok", False))
    error = getattr(raw, "error", None)
    timed_out = bool(getattr(raw, "timed_out", False)) or (
        not ok and error is not None and "time" in str(error).lower()
    )
    return PutResult(ok=ok, timed_out=timed_out, error=None if ok else str(error or "failed"))


class ChannelAccess:
    """One ``monitor.ca.CAClient`` on an event loop in its own thread, called synchronously,
    so that the restore's database work stays on the calling thread between CA calls."""

    def __init__(self) -> None:
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(
            target=self._loop.run_forever, name="restore-ca", daemon=True
        )
        self._thread.start()
        self._manager: Any = None
        self._client: Any = None
        try:
            self._client = self._call(self._open())
        except BaseException:
            self._stop()
            raise

    async def _open(self) -> Any:
        from monitor.ca import CAClient

        self._manager = CAClient()
        return await self._manager.__aenter__()

    def _call(self, coro: Any) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result()

    def preconnect(self, names: Sequence[str], timeout: float) -> None:
        """Start searching and connecting ``names`` in the background (no wait): the
        connections are made while the caller works on the database."""
        if names:
            asyncio.run_coroutine_threadsafe(self._client.connect(list(names), timeout), self._loop)

    def read(self, names: Sequence[str], timeout: float) -> dict[str, values.Entry]:
        if not names:
            return {}
        return self._call(self._client.read_many(list(names), timeout))

    def write(self, targets: dict[str, Any], timeout: float) -> dict[str, PutResult]:
        if not targets:
            return {}
        raw = self._call(self._client.write_many(targets, timeout, wait=True))
        return {name: _put_result(raw.get(name)) for name in targets}

    def _stop(self) -> None:
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)
        if not self._thread.is_alive():
            self._loop.close()

    def close(self) -> None:
        try:
            if self._manager is not None:
                self._call(self._manager.__aexit__(None, None, None))
        finally:
            self._stop()

    def __enter__(self) -> ChannelAccess:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


# --- Execution ---------------------------------------------------------------------------------


@dataclass(slots=True)
class _Item:
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


@dataclass(slots=True)
class _Result:
    item: _Item
    outcome: int
    written: Any = None
    setpoint: Any = None
    readback: Any = None
    error: str | None = None


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
)


def _items_load(plan: RestorePlan) -> list[_Item]:
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
        )
    )
    return [
        _Item(
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
        )
        for r in rows
    ]


def _items_from_rows(rows: list[_PlanRow]) -> list[_Item]:
    """The items of a plan just stored, without reading them back."""
    return [
        _Item(
            id=r.id,
            pv_id=r.pv_id,
            pv_name=r.pv_name,
            setpoint_address=r.setpoint_address,
            readback_address=r.readback_address,
            action=r.action,
            abs_tol=r.abs_tol,
            rel_tol=r.rel_tol,
            saved=r.saved,
            note=r.note,
        )
        for r in sorted(rows, key=lambda r: r.id)
    ]


def _outcomes_write(restore_id: Any, results: Iterable[_Result]) -> None:
    """COPY outcomes of ``restore_id`` inside the caller's transaction, holding the restore
    row FOR KEY SHARE: what the missing foreign key would check per row (models BULK_CHILD)."""
    with connection.cursor() as cursor:
        cursor.execute("SELECT 1 FROM restore WHERE id = %s FOR KEY SHARE", [restore_id])
        if cursor.fetchone() is None:
            raise RestoreAborted(f"Restore {restore_id} no longer exists; outcomes not recorded")
    _copy(
        RestoreOutcome._meta.db_table,
        _OUTCOME_COLUMNS,
        (
            (
                restore_id,
                r.item.id,
                r.item.pv_id,
                r.item.pv_name,
                r.outcome,
                _json(r.written),
                _json(r.setpoint),
                _json(r.readback),
                r.error,
            )
            for r in results
        ),
    )


class _Clock:
    """Seconds spent per phase, accumulated (for the audit record and the benchmark)."""

    def __init__(self) -> None:
        self.laps: dict[str, float] = {}
        self._last = time.perf_counter()

    def lap(self, phase: str) -> None:
        now = time.perf_counter()
        self.laps[phase] = round(self.laps.get(phase, 0.0) + now - self._last, 3)
        self._last = now


class RestoreAborted(Exception):
    """The restore row is no longer running (failed by the orphan reaper): stop writing."""


def _entry_wire(entry: values.Entry | None) -> Any:
    side = side_from_entry(entry) if entry is not None else None
    return values.finite(side.wire) if side is not None else None


def _read_error(entry: values.Entry | None) -> str:
    return (entry or {}).get("error") or values.DISCONNECTED


def verify_chunk(
    *,
    ca: ChannelAccess,
    items: list[_Item],
    timeout: float,
    settle: float,
    clock: _Clock | None = None,
) -> list[_Result]:
    """Write ``items`` with completion, then read back and judge each one."""
    clock = clock or _Clock()
    targets = {item.setpoint_address: item.saved for item in items}  # type: ignore[misc]
    puts = ca.write(targets, timeout)
    clock.lap("write")
    results: dict[int, _Result] = {}
    written: list[_Item] = []
    for item in items:
        put = puts[item.setpoint_address]  # type: ignore[index]
        if put.ok:
            written.append(item)
            continue
        results[item.id] = _Result(
            item=item,
            outcome=Outcome.TIMED_OUT if put.timed_out else Outcome.WRITE_FAILED,
            written=item.saved,
            error=put.error,
        )
    names = [i.setpoint_address for i in written] + [
        i.readback_address for i in written if i.readback_address
    ]
    read = ca.read(names, timeout)  # type: ignore[arg-type]
    clock.lap("read_back")
    waiting: list[_Result] = []
    for item in written:
        sp_entry = read.get(item.setpoint_address)  # type: ignore[arg-type]
        sp_value = _entry_wire(sp_entry)
        result = _Result(item=item, outcome=Outcome.VERIFIED, written=item.saved, setpoint=sp_value)
        results[item.id] = result
        if sp_value is None:
            result.outcome = Outcome.TIMED_OUT
            result.error = f"written, but reading the setpoint back failed: {_read_error(sp_entry)}"
            continue
        if not within_tolerance(item.saved, sp_value, abs_tol=item.abs_tol, rel_tol=item.rel_tol):
            result.outcome = Outcome.MISMATCH
            result.error = (
                f"setpoint reads back {dumps(sp_value)[:200]} after writing "
                f"{dumps(item.saved)[:200]} (clamped or rejected by the IOC)"
            )
            continue
        if item.readback_address:
            result.readback = _entry_wire(read.get(item.readback_address))
            if not within_tolerance(
                item.saved, result.readback, abs_tol=item.abs_tol, rel_tol=item.rel_tol
            ):
                waiting.append(result)
    deadline = time.monotonic() + settle
    while waiting and time.monotonic() < deadline:
        time.sleep(SETTLE_POLL)
        again = ca.read([r.item.readback_address for r in waiting], timeout)  # type: ignore[misc]
        still = []
        for result in waiting:
            result.readback = _entry_wire(again.get(result.item.readback_address))  # type: ignore[arg-type]
            item = result.item
            if not within_tolerance(
                item.saved, result.readback, abs_tol=item.abs_tol, rel_tol=item.rel_tol
            ):
                still.append(result)
        waiting = still
    clock.lap("verify")
    for result in waiting:
        result.outcome = Outcome.MISMATCH
        result.error = (
            f"readback {result.item.readback_address} is {dumps(result.readback)[:200]}, not "
            f"within tolerance of {dumps(result.item.saved)[:200]} after {settle:g} s"
        )
    return [results[item.id] for item in items]


class _Heartbeat:
    """Keeps ``Restore.heartbeat_at`` fresh from a thread while the worker lives."""

    def __init__(self, restore_id: Any) -> None:
        self._restore_id = restore_id
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="restore-heartbeat", daemon=True)

    def _run(self) -> None:
        from django.db import connections

        try:
            while not self._stop.wait(HEARTBEAT_INTERVAL):
                Restore.objects.filter(pk=self._restore_id, status=Restore.Status.RUNNING).update(
                    heartbeat_at=timezone.now()
                )
        except Exception:  # a heartbeat must never kill the restore
            log.exception("restore %s heartbeat failed", self._restore_id)
        finally:
            connections.close_all()

    def __enter__(self) -> _Heartbeat:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(5)


def restore_result_message(*, total: int, success: int, failed: int) -> str:
    """The job message of the contract (§5.2)."""
    if failed == 0:
        return f"All {total:,} PVs have been restored to their snapshot values."
    return f"Restored {success:,}/{total:,} PVs ({failed:,} failed)"


def _summary_store(restore: Restore) -> Restore:
    """Counts by outcome from the outcome rows, onto the Restore row."""
    grouped = dict(
        RestoreOutcome.objects.filter(restore=restore)
        .values_list("outcome")
        .annotate(n=Count("id"))
        .values_list("outcome", "n")
    )
    restore.counts = {OUTCOME_NAMES[o]: grouped.get(o, 0) for o in OUTCOME_ORDER}
    restore.success_count = grouped.get(Outcome.VERIFIED, 0)
    restore.failure_count = sum(grouped.get(o, 0) for o in FAILED_OUTCOMES)
    restore.total = restore.success_count + restore.failure_count
    return restore


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
        "failures": failures_list(restore=restore),
        "counts": restore.counts,
        "restoreId": str(restore.pk),
        "planId": str(restore.plan_id) if restore.plan_id else None,
        "safetySnapshotId": str(restore.safety_snapshot_id) if restore.safety_snapshot_id else None,
        "timings": restore.timings,
    }


@dataclass(frozen=True, slots=True)
class _Direct:
    """A value read directly for the safety snapshot (the shape values_collect returns)."""

    entry: values.Entry
    source: int = ValueSource.DIRECT
    age: float = 0.0


def _capture(catalog: list[Any], ca: ChannelAccess) -> dict[str, Any]:
    """Capture the setpoints and readbacks of ``catalog`` (snapshots.capture.CatalogRow):
    through the snapshot capture (``values_collect``: cache first) while the monitor is alive,
    else read directly on the restore's own connected client (the channels it then writes)."""
    from snapshots.capture import Completeness, values_collect

    addresses = list(
        dict.fromkeys(a for c in catalog for a in (c.setpoint_address, c.readback_address) if a)
    )
    if monitor_alive():
        return values_collect(
            addresses=addresses, use_cache=True, progress=lambda *_: None, counts=Completeness()
        )
    read = ca.read(addresses, settings.EPICS_TIMEOUT)
    return {a: _Direct(values.clean(read.get(a) or _no_answer())) for a in addresses}


def _no_answer() -> values.Entry:
    return {"value": None, "connected": False, "updated_at": time.time(), "error": "no answer"}


def _addresses(rows: Iterable[_PlanRow | _Item]) -> list[str]:
    return [a for r in rows for a in (r.setpoint_address, r.readback_address) if a]


def _catalog_rows(rows: Iterable[_PlanRow | _Item]) -> list[Any]:
    from snapshots.capture import CatalogRow

    return [
        CatalogRow(
            pv_id=r.pv_id,  # type: ignore[arg-type]
            setpoint_address=r.setpoint_address,
            readback_address=r.readback_address,
            config_address=None,
        )
        for r in rows
    ]


def _safety_store(
    *, restore: Restore, catalog: list[Any], captured: dict[str, Any], items: list[_Item]
) -> set[int]:
    """Save the captured values of ``catalog`` (exactly the PVs about to be written) as the
    safety snapshot of ``restore``; the ids of items whose setpoint could not be read."""
    from snapshots.capture import Completeness, captured_values_build, snapshot_store

    wanted = {a for c in catalog for a in (c.setpoint_address, c.readback_address) if a}
    counts = Completeness()
    for address in wanted:
        got = captured.get(address)
        entry = got.entry if got is not None else None
        if entry is None or entry.get("value") is None:
            counts.failed += 1
        elif got.source == ValueSource.DIRECT:
            counts.reread += 1
        elif entry.get("error"):
            counts.stale += 1
        else:
            counts.live += 1
    rows = list(captured_values_build(catalog=catalog, captured=captured))
    unreadable = set()
    for item in items:
        got = captured.get(item.setpoint_address)  # type: ignore[arg-type]
        entry = got.entry if got is not None else None
        if entry is None or entry.get("value") is None or entry.get("error"):
            unreadable.add(item.id)
    with transaction.atomic():
        snapshot = snapshot_store(
            title=f"Safety before {restore.kind} of '{restore.snapshot_title}'"[:255],
            description=f"Values before {restore.kind} {restore.pk}, taken to revert it",
            created_by=restore.created_by,
            kind=Snapshot.Kind.SAFETY,
            rows=rows,
            counts=counts,
        )
        Restore.objects.filter(pk=restore.pk).update(safety_snapshot=snapshot)
    restore.safety_snapshot = snapshot
    return unreadable


def _note_attempt(restore: Restore, *, through: int, attempted: int) -> None:
    updated = Restore.objects.filter(pk=restore.pk, status=Restore.Status.RUNNING).update(
        attempted_through=through, attempted=attempted, heartbeat_at=timezone.now()
    )
    if not updated:
        raise RestoreAborted(f"Restore {restore.pk} is no longer running; stopped writing")


@gc_paused()
def restore_execute(*, restore: Restore, progress: ProgressFn) -> Restore:
    """Plan (if needed), safety snapshot, write, verify and record; the Restore, completed.

    One Channel Access client serves the whole restore: the channels it reads for the plan
    and the safety snapshot are the ones it then writes and reads back.
    """
    with ChannelAccess() as ca:
        return _execute(restore=restore, progress=progress, ca=ca)


def _execute(*, restore: Restore, progress: ProgressFn, ca: ChannelAccess) -> Restore:
    timeout = settings.EPICS_TIMEOUT
    clock = _Clock()
    captured: dict[str, Any] | None = None
    if restore.plan_id is None:
        # Plain restore: ONE capture serves the plan and the safety snapshot, moments apart.
        progress(2, "Reading live values for the plan...")
        selection = Selection(
            pv_ids=tuple(restore.pv_ids) if restore.pv_ids is not None else None,
            tag_filters=tuple(tuple(uuid.UUID(t) for t in g) for g in restore.tag_filters or []),
        )
        assert restore.snapshot is not None
        started = time.monotonic()
        rows, candidates = plan_rows_saved(snapshot=restore.snapshot, selection=selection)
        ca.preconnect(_addresses(candidates), timeout)
        clock.lap("plan")
        captured = _capture(_catalog_rows(candidates), ca)
        clock.lap("capture")
        plan_rows_classify(candidates=candidates, live={a: c.entry for a, c in captured.items()})
        plan = plan_store(
            snapshot=restore.snapshot,
            selection=selection,
            rows=rows,
            created_by=restore.created_by,
            elapsed=time.monotonic() - started,
        )
        Restore.objects.filter(pk=restore.pk).update(plan=plan)
        restore.plan = plan
        items = _items_from_rows(rows)
        clock.lap("plan")
    else:
        assert restore.plan is not None
        items = _items_load(restore.plan)
        ca.preconnect(_addresses(i for i in items if i.action == PlanAction.WRITE), timeout)
    to_write = [i for i in items if i.action == PlanAction.WRITE]
    skipped = [
        _Result(item=i, outcome=SKIP_OUTCOME[PlanAction(i.action)], error=i.note)
        for i in items
        if i.action != PlanAction.WRITE
    ]
    with transaction.atomic():
        _outcomes_write(restore.pk, skipped)
    clock.lap("record")
    total = len(to_write)
    progress(5, f"Starting restore of {total:,} PVs")
    if to_write:
        progress(6, f"Taking safety snapshot of {total:,} PVs...")
        catalog = _catalog_rows(to_write)
        if captured is None:
            captured = _capture(catalog, ca)
            clock.lap("capture")
        unreadable = _safety_store(
            restore=restore, catalog=catalog, captured=captured, items=to_write
        )
        clock.lap("safety_snapshot")
        if unreadable:
            with transaction.atomic():
                _outcomes_write(
                    restore.pk,
                    (
                        _Result(
                            item=i,
                            outcome=Outcome.TIMED_OUT,
                            error="not written: its current value could not be read for the "
                            "safety snapshot (IOC not answering?)",
                        )
                        for i in to_write
                        if i.id in unreadable
                    ),
                )
            to_write = [i for i in to_write if i.id not in unreadable]
        done = total - len(to_write)
        for start in range(0, len(to_write), CHUNK):
            chunk = to_write[start : start + CHUNK]
            _note_attempt(restore, through=chunk[-1].id, attempted=start + len(chunk))
            results = verify_chunk(
                ca=ca, items=chunk, timeout=timeout, settle=settle_time(), clock=clock
            )
            with transaction.atomic():
                _outcomes_write(restore.pk, results)
            clock.lap("record")
            done += len(chunk)
            progress(10 + int(85 * done / max(total, 1)), f"{done:,}/{total:,} PVs")
    with transaction.atomic():
        locked = Restore.objects.select_for_update().get(pk=restore.pk)
        if locked.status != Restore.Status.RUNNING:
            raise RestoreAborted(f"Restore {restore.pk} is no longer running")
        _summary_store(locked)
        clock.lap("record")
        locked.timings = clock.laps
        locked.status = Restore.Status.COMPLETED
        locked.finished_at = timezone.now()
        locked.save()
        _release(locked.pk)
    return locked


def _restore_fail(*, restore_id: Any, error: str) -> Restore | None:
    """Fail a running restore: outcomes for what has none (``interrupted`` up to the attempted
    boundary, ``not-attempted`` after), counts, claims released. None if it was not running."""
    with transaction.atomic():
        restore = Restore.objects.select_for_update().filter(pk=restore_id).first()
        if restore is None or restore.status not in (
            Restore.Status.RUNNING,
            Restore.Status.PENDING,
        ):
            return None
        if restore.plan_id is not None:
            recorded = set(
                RestoreOutcome.objects.filter(restore=restore).values_list("item_id", flat=True)
            )
            boundary = restore.attempted_through or 0
            missing = [
                i
                for i in _items_load(restore.plan)
                if i.id not in recorded  # type: ignore[arg-type]
            ]
            _outcomes_write(
                restore.pk,
                (
                    _Result(
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
        _summary_store(restore)
        restore.status = Restore.Status.FAILED
        restore.error = error
        restore.finished_at = timezone.now()
        restore.save()
        _release(restore.pk)
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

    def work(job: Job, progress: ProgressFn) -> jobs.JobOutcome:
        try:
            with _Heartbeat(restore.pk):
                done = restore_execute(restore=restore, progress=progress)
        except Exception as exc:
            _restore_fail(restore_id=restore.pk, error=jobs.error_text(exc))
            raise
        holder["restore"] = done
        return jobs.JobOutcome(
            result_id=str(done.snapshot_id) if done.snapshot_id else None,
            message=restore_result_message(
                total=done.total, success=done.success_count, failed=done.failure_count
            ),
            result=restore_result(done),
        )

    if restore.job_id is None:
        raise NotFound(f"Restore {restore_id} has no job")
    try:
        jobs.job_run(job_id=str(restore.job_id), work=work, will_retry=lambda exc: False)
    except Exception:
        # Recorded: the restore and its job are failed, with the error. Never retried.
        log.warning("restore %s failed", restore_id, exc_info=True)
        return Restore.objects.filter(pk=restore_id).first()
    return holder.get("restore")


def restore_reap_orphans(*, stale_after: float | None = None) -> list[Restore]:
    """Fail running restores whose worker stopped sending heartbeats (never retried)."""
    stale = heartbeat_stale() if stale_after is None else stale_after
    cutoff = timezone.now() - timedelta(seconds=stale)
    reaped = []
    for rid, beat in Restore.objects.filter(
        status=Restore.Status.RUNNING, heartbeat_at__lt=cutoff
    ).values_list("id", "heartbeat_at"):
        done = _restore_fail(
            restore_id=rid,
            error=(
                f"The worker running this restore stopped (last heartbeat {beat:%H:%M:%S} UTC). "
                "It is not retried automatically: check the outcomes for what was written."
            ),
        )
        if done is not None:
            reaped.append(done)
    return reaped


# --- Reads for the API ---------------------------------------------------------------------


def plan_items_rows(
    *, plan: RestorePlan, action: int | None, limit: int | None, offset: int
) -> Iterable[tuple]:
    """Plan items as raw tuples, writes first then by name (no model instances)."""
    qs = RestorePlanItem.objects.filter(plan=plan)
    if action is not None:
        qs = qs.filter(action=action)
    qs = qs.order_by("action", "pv_name", "id").values_list(
        "pv_id",
        "pv_name",
        "setpoint_address",
        "readback_address",
        "action",
        "saved",
        "live",
        "delta",
        "note",
    )
    if limit is not None:
        return qs[offset : offset + limit].iterator(chunk_size=5000)
    return qs[offset:].iterator(chunk_size=5000) if offset else qs.iterator(chunk_size=5000)


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
    qs = (
        qs.annotate(rank=rank)
        .order_by("rank", "pv_name", "id")
        .values_list(
            "pv_id", "pv_name", "outcome", "written", "setpoint_read", "readback_read", "error"
        )
    )
    end = offset + limit if limit is not None else None
    return qs[offset:end].iterator(chunk_size=5000)
