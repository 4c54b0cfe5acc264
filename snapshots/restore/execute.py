"""Execution of a claimed restore: plan (if the request had none), safety snapshot, then write,
verify and record a chunk at a time, and finish the audit record.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterable
from typing import Any

from django.conf import settings
from django.db import transaction
from django.utils import timezone

from snapshots.capture import ProgressFn
from snapshots.models import Outcome, PlanAction, Restore
from snapshots.restore.claims import claims_release
from snapshots.restore.epics import ChannelAccess
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
    with ChannelAccess() as ca:
        return _execute(restore=restore, progress=progress, ca=ca)


def _execute(*, restore: Restore, progress: ProgressFn, ca: ChannelAccess) -> Restore:
    timeout = settings.EPICS_TIMEOUT
    clock = Clock()
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
        captured = safety_capture(catalog_rows(candidates), ca)
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
        items = items_from_rows(rows)
        clock.lap("plan")
    else:
        assert restore.plan is not None
        items = items_load(restore.plan)
        ca.preconnect(_addresses(i for i in items if i.action == PlanAction.WRITE), timeout)
    to_write = [i for i in items if i.action == PlanAction.WRITE]
    skipped = [
        Result(item=i, outcome=SKIP_OUTCOME[PlanAction(i.action)], error=i.note)
        for i in items
        if i.action != PlanAction.WRITE
    ]
    with transaction.atomic():
        outcomes_write(restore.pk, skipped)
    clock.lap("record")
    total = len(to_write)
    progress(5, f"Starting restore of {total:,} PVs")
    if to_write:
        progress(6, f"Taking safety snapshot of {total:,} PVs...")
        catalog = catalog_rows(to_write)
        if captured is None:
            captured = safety_capture(catalog, ca)
            clock.lap("capture")
        unreadable = safety_store(
            restore=restore, catalog=catalog, captured=captured, items=to_write
        )
        clock.lap("safety_snapshot")
        if unreadable:
            with transaction.atomic():
                outcomes_write(
                    restore.pk,
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
            to_write = [i for i in to_write if i.id not in unreadable]
        done = total - len(to_write)
        for start in range(0, len(to_write), CHUNK):
            chunk = to_write[start : start + CHUNK]
            _note_attempt(restore, through=chunk[-1].id, attempted=start + len(chunk))
            results = verify_chunk(
                ca=ca, items=chunk, timeout=timeout, settle=settle_time(), clock=clock
            )
            with transaction.atomic():
                outcomes_write(restore.pk, results)
            clock.lap("record")
            done += len(chunk)
            progress(10 + int(85 * done / max(total, 1)), f"{done:,}/{total:,} PVs")
    with transaction.atomic():
        locked = Restore.objects.select_for_update().get(pk=restore.pk)
        if locked.status != Restore.Status.RUNNING:
            raise RestoreAborted(f"Restore {restore.pk} is no longer running")
        summary_store(locked)
        clock.lap("record")
        locked.timings = clock.laps
        locked.status = Restore.Status.COMPLETED
        locked.finished_at = timezone.now()
        locked.save()
        claims_release(locked.pk)
    return locked
