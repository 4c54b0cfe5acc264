"""Execution of a claimed restore: plan (if the request had none), safety snapshot, then write,
verify and record a chunk at a time, and finish the audit record.
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from django.conf import settings
from django.db import transaction
from django.utils import timezone

from monitor.bridge import Bridge
from snapshots.capture import ProgressFn
from snapshots.models import Outcome, PlanAction, Restore
from snapshots.restore.claims import claims_release
from snapshots.restore.plan import (
    PlanRow,
    items_from_rows,
    plan_rows_classify,
    plan_rows_saved,
    plan_store,
)
from snapshots.restore.records import (
    SKIP_OUTCOME,
    Clock,
    Item,
    RestoreAborted,
    Result,
    items_load,
    outcomes_write,
    summary_store,
)
from snapshots.restore.safety import catalog_rows, safety_capture, safety_store
from snapshots.restore.selection import Selection
from snapshots.restore.verify import settle_time, verify_chunk
from squirrel.perf import gc_paused

# Tunables (candidates for settings: SQUIRREL_RESTORE_*).
# Tunables (candidates for settings: SQUIRREL_RESTORE_*).
CHUNK = 10_000  # PVs written, verified and recorded per step


def _addresses(rows: Iterable[PlanRow | Item]) -> list[str]:
    return [a for r in rows for a in (r.setpoint_address, r.readback_address) if a]


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
    with Bridge() as ca:
        return _execute(restore=restore, progress=progress, ca=ca)


@dataclass(slots=True)
class _Run:
    """What the phases of one execution share."""

    restore: Restore
    progress: ProgressFn
    ca: Bridge
    clock: Clock
    timeout: float


def _execute(*, restore: Restore, progress: ProgressFn, ca: Bridge) -> Restore:
    """The phases in order: plan (or load the stored plan), record the skipped items, safety
    snapshot, then write, verify and record a chunk at a time, and finish."""
    run = _Run(restore, progress, ca, Clock(), settings.EPICS_TIMEOUT)
    captured: dict[str, Any] | None = None
    if restore.plan_id is None:
        items, captured = _plan_phase(run)
    else:
        items = _plan_load_phase(run)
    to_write = _skipped_record_phase(run, items)
    total = len(to_write)
    progress(5, f"Starting restore of {total:,} PVs")
    if to_write:
        to_write = _safety_phase(run, to_write, captured)
        done = total - len(to_write)
        for start in range(0, len(to_write), CHUNK):
            chunk = to_write[start : start + CHUNK]
            _chunk_write_phase(run, chunk, attempted=start + len(chunk))
            done += len(chunk)
            progress(10 + int(85 * done / max(total, 1)), f"{done:,}/{total:,} PVs")
    return _finish_phase(run)


def _plan_phase(run: _Run) -> tuple[list[Item], dict[str, Any]]:
    """Plain restore: plan it now. ONE capture serves the plan and the safety snapshot,
    moments apart; the items and that capture."""
    restore = run.restore
    run.progress(2, "Reading live values for the plan...")
    selection = Selection.stored(restore.pv_ids, restore.tag_filters)
    assert restore.snapshot is not None
    started = time.monotonic()
    rows, candidates = plan_rows_saved(snapshot=restore.snapshot, selection=selection)
    run.ca.preconnect(_addresses(candidates), run.timeout)
    run.clock.lap("plan")
    captured = safety_capture(catalog_rows(candidates), run.ca)
    run.clock.lap("capture")
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
    items = items_from_rows(rows)
    run.clock.lap("plan")
    return items, captured


def _plan_load_phase(run: _Run) -> list[Item]:
    """Execution of a stored plan: its items; the channels to write start connecting."""
    assert run.restore.plan is not None
    items = items_load(run.restore.plan)
    run.ca.preconnect(_addresses(i for i in items if i.action == PlanAction.WRITE), run.timeout)
    return items


def _skipped_record_phase(run: _Run, items: list[Item]) -> list[Item]:
    """Record the outcome of every item the plan does not write; the items to write."""
    to_write = [i for i in items if i.action == PlanAction.WRITE]
    skipped = [
        Result(item=i, outcome=SKIP_OUTCOME[PlanAction(i.action)], error=i.note)
        for i in items
        if i.action != PlanAction.WRITE
    ]
    with transaction.atomic():
        outcomes_write(run.restore.pk, skipped)
    run.clock.lap("record")
    return to_write


def _safety_phase(run: _Run, to_write: list[Item], captured: dict[str, Any] | None) -> list[Item]:
    """Store the safety snapshot of ``to_write`` (capturing it unless the plan just did) and
    record as timed out the items whose current value could not be read; the rest."""
    run.progress(6, f"Taking safety snapshot of {len(to_write):,} PVs...")
    catalog = catalog_rows(to_write)
    if captured is None:
        captured = safety_capture(catalog, run.ca)
        run.clock.lap("capture")
    unreadable = safety_store(
        restore=run.restore, catalog=catalog, captured=captured, items=to_write
    )
    run.clock.lap("safety_snapshot")
    if not unreadable:
        return to_write
    with transaction.atomic():
        outcomes_write(
            run.restore.pk,
            (
                Result(
                    item=i,
                    outcome=Outcome.TIMED_OUT,
                    error="not written: its current value could not be read for the "
                    "safety snapshot (IOC not answering?)",
                )
                for i in to_write
                if i.id in unreadable
            ),
        )
    return [i for i in to_write if i.id not in unreadable]


def _chunk_write_phase(run: _Run, chunk: list[Item], *, attempted: int) -> None:
    """Note the chunk as attempted, write and verify it, and record its outcomes."""
    _note_attempt(run.restore, through=chunk[-1].id, attempted=attempted)
    results = verify_chunk(
        ca=run.ca, items=chunk, timeout=run.timeout, settle=settle_time(), clock=run.clock
    )
    with transaction.atomic():
        outcomes_write(run.restore.pk, results)
    run.clock.lap("record")


def _finish_phase(run: _Run) -> Restore:
    """Counts and timings onto the Restore row, completed, and its claims released (unless
    the reaper failed it meanwhile)."""
    with transaction.atomic():
        locked = Restore.objects.select_for_update().get(pk=run.restore.pk)
        if locked.status != Restore.Status.RUNNING:
            raise RestoreAborted(f"Restore {run.restore.pk} is no longer running")
        summary_store(locked)
        run.clock.lap("record")
        locked.timings = run.clock.laps
        locked.status = Restore.Status.COMPLETED
        locked.finished_at = timezone.now()
        locked.save()
        claims_release(locked.pk)
    return locked
