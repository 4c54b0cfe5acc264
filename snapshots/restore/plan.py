"""Restore plans: every selected PV classified against its live setpoint (``write``,
``skip-equal``, ``skip-read-only``, ``skip-no-value``, ``disconnected``, and
``skip-not-permitted`` outside the tags its maker may restore) and stored with COPY.

Items are stored in the order a restore writes them: by restore stage, then completion
timeout, then name. Their ids follow that order, so "every write item up to id N was
attempted" (``Restore.attempted_through``) stays true of a staged restore.
"""

from __future__ import annotations

import math
import time
import uuid
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from django.conf import settings
from django.db import connection, transaction
from django.db.models import QuerySet
from django.utils import timezone

from monitor import bridge, cache, values
from pvs.models import PV
from snapshots.codec import KIND_STRUCT, RAW_SIDE, side_from_columns, side_from_entry
from snapshots.models import PlanAction, RestorePlan, RestorePlanItem, Snapshot, SnapshotValue
from snapshots.restore.records import Item, copy_rows, json_text, row_get
from snapshots.restore.selection import Selection
from snapshots.services import snapshot_get
from snapshots.tolerance import within_tolerance
from squirrel import audit
from squirrel.auth import ANONYMOUS
from squirrel.exceptions import Unavailable
from squirrel.perf import gc_paused

ACTION_NAMES: dict[int, str] = {int(v): str(label) for v, label in PlanAction.choices}
ACTION_BY_NAME: dict[str, int] = {name: value for value, name in ACTION_NAMES.items()}
NOT_IN_CATALOG = "PV is no longer in the catalog"
NO_SETPOINT = "PV has no setpoint address"
READ_ONLY = "PV is read-only"
NO_SAVED_VALUE = "snapshot holds no setpoint value"
NOT_PERMITTED = "outside the tags this restorer may write"


@dataclass(slots=True)
class PlanRow:
    """One selected PV while its plan is computed (stored as a RestorePlanItem)."""

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
    stage: int = 0
    completion_timeout: float | None = None
    id: int = 0  # the RestorePlanItem id, once stored

    def order(self) -> tuple[int, float, str]:
        """Where the item comes in a restore: stage, completion timeout (default first), name."""
        return (self.stage, self.completion_timeout or 0.0, self.pv_name)


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
    *,
    snapshot: Snapshot,
    selection: Selection,
    permitted_tag_ids: Sequence[uuid.UUID] | None = None,
) -> tuple[list[PlanRow], list[PlanRow]]:
    """Every selected PV with its saved setpoint, classified as far as the catalog (and the
    tags the restorer may write, ``permitted_tag_ids``: None for all) allows, in write order:
    (all rows, the candidates still to compare with their live value)."""
    permitted: set[uuid.UUID] | None = None
    if permitted_tag_ids is not None:
        permitted = set(
            PV.objects.with_any_tag(list(permitted_tag_ids) or [uuid.UUID(int=0)]).values_list(
                "id", flat=True
            )
        )
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
            "pv__restore_stage",
            "pv__completion_timeout",
            *(f"sp_{c}" for c in RAW_SIDE),
        )
    )
    rows: list[PlanRow] = []
    candidates: list[PlanRow] = []
    for r in raw:
        (vid, pv_id, name, sp_addr, rb_addr, read_only, abs_tol, rel_tol, stage, timeout) = r[:10]
        saved = side_from_columns(*r[10:17])
        row = PlanRow(
            value_id=vid,
            pv_id=pv_id,
            pv_name=name,
            setpoint_address=sp_addr or None,
            readback_address=rb_addr if rb_addr and rb_addr != sp_addr else None,
            action=PlanAction.WRITE,
            abs_tol=abs_tol or 0.0,
            rel_tol=rel_tol or 0.0,
            saved=values.finite(saved.wire) if saved is not None else None,
            stage=stage or 0,
            completion_timeout=timeout,
        )
        if pv_id is None or read_only is None:
            row.action, row.note = PlanAction.SKIP_READ_ONLY, NOT_IN_CATALOG
        elif read_only:
            row.action, row.note = PlanAction.SKIP_READ_ONLY, READ_ONLY
        elif not sp_addr:
            row.action, row.note = PlanAction.SKIP_READ_ONLY, NO_SETPOINT
        elif r[10] == KIND_STRUCT:  # r[10:17] is RAW_SIDE, the kind first
            row.action, row.note = PlanAction.SKIP_READ_ONLY, values.NOT_RESTORABLE
        elif row.saved is None:
            row.action, row.note = PlanAction.SKIP_NO_VALUE, NO_SAVED_VALUE
        elif permitted is not None and pv_id not in permitted:
            row.action, row.note = PlanAction.SKIP_NOT_PERMITTED, NOT_PERMITTED
        else:
            candidates.append(row)
        rows.append(row)
    rows.sort(key=PlanRow.order)
    candidates.sort(key=PlanRow.order)
    return rows, candidates


def plan_rows_classify(*, candidates: list[PlanRow], live: dict[str, values.Entry]) -> None:
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


def live_entries(addresses: Sequence[str]) -> dict[str, values.Entry]:
    """Current entries of ``addresses``: from the monitor's cache those that are current by
    the liveness rule (``monitor.cache``) and carry no error, a direct read for the others."""
    addresses = list(dict.fromkeys(addresses))
    if not addresses:
        return {}
    found = {a: e for a, e in cache.current_entries(addresses).items() if not e.get("error")}
    missing = [a for a in addresses if a not in found]
    if missing:
        try:
            found.update(bridge.read(missing, settings.EPICS_TIMEOUT))
        except OSError as exc:
            raise Unavailable(f"Cannot read live values over EPICS: {exc}") from exc
    return found


def plan_rows_compute(
    *,
    snapshot: Snapshot,
    selection: Selection,
    permitted_tag_ids: Sequence[uuid.UUID] | None = None,
) -> list[PlanRow]:
    """Classify every selected PV against its live setpoint (see the module docstring)."""
    rows, candidates = plan_rows_saved(
        snapshot=snapshot, selection=selection, permitted_tag_ids=permitted_tag_ids
    )
    live = live_entries([row.setpoint_address for row in candidates if row.setpoint_address])
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
    "stage",
    "completion_timeout",
)


def _now(fn: Callable[..., None], *args: Any) -> None:
    fn(*args)


def plan_stages(rows: Iterable[PlanRow]) -> list[dict[str, int]]:
    """Per restore stage, ascending: how many items and how many of them are written."""
    stages: dict[int, dict[str, int]] = {}
    for r in rows:
        entry = stages.setdefault(r.stage, {"stage": r.stage, "total": 0, "write": 0})
        entry["total"] += 1
        entry["write"] += r.action == PlanAction.WRITE
    return [stages[k] for k in sorted(stages)]


def plan_store(
    *,
    snapshot: Snapshot,
    selection: Selection,
    rows: list[PlanRow],
    created_by: str | None,
    elapsed: float,
    needs_approval: bool = False,
    permitted_tag_ids: Sequence[uuid.UUID] | None = None,
    actor: str | None = None,
    defer: Callable[..., None] | None = None,
) -> RestorePlan:
    """Save a plan and its items (COPY) in one transaction; audited when ``actor`` is given
    (a plan asked for through the API, not the one a plain restore makes for itself).
    ``defer`` (a restore's ``Recorder.submit``): the items' COPY is handed to it instead, to
    run while the restore goes on (their ids are drawn here, first)."""
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
            needs_approval=needs_approval,
            permitted_tag_ids=list(permitted_tag_ids) if permitted_tag_ids is not None else None,
            stages=plan_stages(rows),
        )
        plan.full_clean()
        plan.save()
        if actor is not None:
            audit.record(
                actor,
                "restore_plan.create",
                plan,
                summary=f"plan of '{snapshot.title}': {plan.counts.get('write', 0)} writes",
                detail={
                    "snapshotId": str(snapshot.pk),
                    "counts": plan.counts,
                    "stages": plan.stages,
                    "needsApproval": needs_approval,
                },
            )
        # Ids drawn first (one query) so the caller keeps the items in memory with their ids.
        with connection.cursor() as cursor:
            cursor.execute(
                "SELECT nextval(pg_get_serial_sequence(%s, 'id')) FROM generate_series(1, %s)",
                [RestorePlanItem._meta.db_table, len(rows)],
            )
            for row, (item_id,) in zip(rows, cursor.fetchall(), strict=True):
                row.id = item_id
        (defer or _now)(
            copy_rows,
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
                    json_text(r.saved),
                    json_text(r.live),
                    r.delta,
                    r.note,
                    r.stage,
                    r.completion_timeout,
                )
                for r in rows
            ),
        )
    return plan


@gc_paused()
def restore_plan_create(
    *,
    snapshot_id: Any,
    selection: Selection,
    created_by: str | None,
    may_restore: bool = True,
    permitted_tag_ids: Sequence[uuid.UUID] | None = None,
    actor: str | None = None,
) -> RestorePlan:
    """Compute and store the plan of restoring ``selection`` of a snapshot (a dry run).

    A maker without the restore scope (``may_restore`` false: a script, an agent) gets a plan
    awaiting approval; a maker limited to tags gets the PVs outside them skip-not-permitted.
    """
    snapshot = snapshot_get(snapshot_id=snapshot_id)
    started = time.monotonic()
    permitted = permitted_tag_ids if may_restore else None
    rows = plan_rows_compute(snapshot=snapshot, selection=selection, permitted_tag_ids=permitted)
    return plan_store(
        snapshot=snapshot,
        selection=selection,
        rows=rows,
        created_by=created_by,
        elapsed=time.monotonic() - started,
        needs_approval=not may_restore,
        permitted_tag_ids=permitted,
        actor=actor or ANONYMOUS,
    )


def restore_plan_get(*, plan_id: Any) -> RestorePlan:
    return row_get(RestorePlan.objects.select_related("snapshot"), plan_id, "Restore plan")


def plan_age(plan: RestorePlan) -> float:
    return (timezone.now() - plan.created_at).total_seconds()


def items_from_rows(rows: list[PlanRow]) -> list[Item]:
    """The items of a plan just stored, without reading them back."""
    return [
        Item(
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
            stage=r.stage,
            completion_timeout=r.completion_timeout,
        )
        for r in sorted(rows, key=lambda r: r.id)
    ]
