"""Execution of a claimed restore: plan (if the request had none), safety snapshot, then write,
verify and record a chunk at a time, stage by stage, and finish the audit record.

Stages (issue 18): the items to write are grouped by their PV's restore stage and run in
ascending order; every write of a stage completes (or times out: its PVs' completion timeout,
else ``SQUIRREL_EPICS_TIMEOUT``) and is verified before the next stage's first write. With
``stop_on_failure``, once a stage has a failure the later stages are recorded
``not-attempted`` and never written.
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from django.conf import settings
from django.db import transaction
from django.utils import timezone

from monitor.bridge import Bridge
from snapshots.capture import ProgressFn
from snapshots.models import Outcome, PlanAction, Restore
from snapshots.restore.background import Recorder
from snapshots.restore.claims import claims_release
from snapshots.restore.plan import (
    PlanRow,
    items_from_rows,
    plan_rows_classify,
    plan_rows_saved,
    plan_store,
)
from snapshots.restore.records import (
    FAILED_OUTCOMES,
    SKIP_OUTCOME,
    Clock,
    Item,
    RestoreAborted,
    Result,
    items_load,
    outcomes_write,
    restore_finish_record,
    summary_store,
)
from snapshots.restore.safety import catalog_rows, safety_capture, safety_store
from snapshots.restore.selection import Selection
from snapshots.restore.verify import settle_time, verify_chunk
from squirrel.perf import gc_paused

# Tunables (candidates for settings: SQUIRREL_RESTORE_*).
CHUNK = 10_000  # PVs written, verified and recorded per step


def _setpoints(rows: Iterable[PlanRow | Item]) -> list[str]:
    return [r.setpoint_address for r in rows if r.setpoint_address]


def _readbacks(rows: Iterable[PlanRow | Item]) -> list[str]:
    return [r.readback_address for r in rows if r.readback_address]


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
    with Bridge() as ca, Recorder() as recorder:
        return _execute(restore=restore, progress=progress, ca=ca, recorder=recorder)


@dataclass(slots=True)
class _Run:
    """What the phases of one execution share."""

    restore: Restore
    progress: ProgressFn
    ca: Bridge
    recorder: Recorder
    clock: Clock
    timeout: float
    times: dict[int, dict[str, str]] = field(default_factory=dict)  # stage -> start, end


def _execute(*, restore: Restore, progress: ProgressFn, ca: Bridge, recorder: Recorder) -> Restore:
    """The phases in order: plan (or load the stored plan), record the skipped items, safety
    snapshot, then write, verify and record a chunk at a time, and finish."""
    run = _Run(restore, progress, ca, recorder, Clock(), settings.EPICS_TIMEOUT)
    captured: dict[str, Any] | None = None
    if restore.plan_id is None:
        items, captured = _plan_phase(run)
    else:
        items = _plan_load_phase(run)
    to_write = _skipped_record_phase(run, items)
    total = len(to_write)
    progress(5, f"Starting restore of {total:,} PVs")
    if to_write:
        writable = _safety_phase(run, to_write, captured)
        _stages_write_phase(run, writable, _failed_before_writing(items, to_write, writable))
    return _finish_phase(run)


def _failed_before_writing(
    items: list[Item], to_write: list[Item], writable: list[Item]
) -> set[int]:
    """Stages with a failure before any write: a PV the plan found disconnected, or one the
    safety snapshot could not read (recorded timed-out)."""
    failed = {i.stage for i in items if i.action == PlanAction.DISCONNECTED}
    if len(writable) < len(to_write):
        kept = {i.id for i in writable}
        failed |= {i.stage for i in to_write if i.id not in kept}
    return failed


def _stages_write_phase(run: _Run, writable: list[Item], failed_stages: set[int]) -> None:
    """Write, verify and record stage by stage, ascending; with ``stop_on_failure``, the
    stages after one with a failure are recorded not-attempted."""
    total = len(writable)
    done = attempted = 0
    stopped_after: int | None = None
    for stage, stage_items in _stages(writable):
        if run.restore.stop_on_failure and stopped_after is None:
            earlier = [s for s in failed_stages if s < stage]
            stopped_after = min(earlier) if earlier else None
        if stopped_after is not None:
            _not_attempted_record(run, stage_items, stopped_after)
            done += len(stage_items)
            continue
        run.times[stage] = {"startedAt": timezone.now().isoformat()}
        failures = 0
        for chunk, timeout in _chunks(stage_items):
            attempted += len(chunk)
            failures += _chunk_write_phase(run, chunk, attempted=attempted, timeout=timeout)
            done += len(chunk)
            run.progress(
                10 + int(85 * done / max(total, 1)), f"{done:,}/{total:,} PVs (stage {stage})"
            )
        run.times[stage]["finishedAt"] = timezone.now().isoformat()
        if failures:
            failed_stages.add(stage)


def _stages(items: list[Item]) -> list[tuple[int, list[Item]]]:
    """The items grouped by restore stage, ascending (items arrive in write order)."""
    out: dict[int, list[Item]] = {}
    for item in items:
        out.setdefault(item.stage, []).append(item)
    return sorted(out.items())


def _chunks(items: list[Item]) -> list[tuple[list[Item], float]]:
    """A stage's items in chunks of at most CHUNK sharing one completion timeout, in order."""
    default = settings.EPICS_TIMEOUT
    out: list[tuple[list[Item], float]] = []
    for item in items:
        timeout = item.completion_timeout or default
        if not out or out[-1][1] != timeout or len(out[-1][0]) >= CHUNK:
            out.append(([], timeout))
        out[-1][0].append(item)
    return out


def _not_attempted_record(run: _Run, items: list[Item], failed_stage: int) -> None:
    """stopOnFailure: a later stage's items, recorded not-attempted, never written."""
    error = f"not written: stage {failed_stage} had a failure and the restore asked to stop on "
    error += "failure"
    run.recorder.submit(
        outcomes_write,
        run.restore.pk,
        [Result(item=i, outcome=Outcome.NOT_ATTEMPTED, error=error) for i in items],
    )


def _plan_phase(run: _Run) -> tuple[list[Item], dict[str, Any]]:
    """Plain restore: plan it now. ONE capture serves the plan and the safety snapshot,
    moments apart; the items and that capture."""
    restore = run.restore
    run.progress(2, "Reading live values for the plan...")
    selection = Selection.stored(restore.pv_ids, restore.tag_filters)
    assert restore.snapshot is not None
    started = time.monotonic()
    rows, candidates = plan_rows_saved(
        snapshot=restore.snapshot,
        selection=selection,
        permitted_tag_ids=restore.permitted_tag_ids,
    )
    # (Connecting before that read was measured no faster: both are Python work on one GIL.)
    run.ca.preconnect(_setpoints(candidates), run.timeout)
    run.clock.lap("plan")
    captured = safety_capture(catalog_rows(candidates), run.ca)
    # The readbacks are read only to verify the writes: they connect while the plan and the
    # safety snapshot are stored.
    run.ca.preconnect(_readbacks(candidates), run.timeout)
    run.clock.lap("capture")
    plan_rows_classify(candidates=candidates, live={a: c.entry for a, c in captured.items()})
    plan = plan_store(
        snapshot=restore.snapshot,
        selection=selection,
        rows=rows,
        created_by=restore.created_by,
        elapsed=time.monotonic() - started,
        permitted_tag_ids=restore.permitted_tag_ids,
        defer=run.recorder.submit,
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
    writes = [i for i in items if i.action == PlanAction.WRITE]
    run.ca.preconnect(_setpoints(writes), run.timeout)
    return items


def _skipped_record_phase(run: _Run, items: list[Item]) -> list[Item]:
    """Record the outcome of every item the plan does not write; the items to write."""
    to_write = [i for i in items if i.action == PlanAction.WRITE]
    skipped = [
        Result(item=i, outcome=SKIP_OUTCOME[PlanAction(i.action)], error=i.note)
        for i in items
        if i.action != PlanAction.WRITE
    ]
    if skipped:
        run.recorder.submit(outcomes_write, run.restore.pk, skipped)
    run.clock.lap("record")
    return to_write


def _safety_phase(run: _Run, to_write: list[Item], captured: dict[str, Any] | None) -> list[Item]:
    """Store the safety snapshot of ``to_write`` (capturing it unless the plan just did) and
    record as timed out the items whose current value could not be read; the rest."""
    run.progress(6, f"Taking safety snapshot of {len(to_write):,} PVs...")
    catalog = catalog_rows(to_write)
    if captured is None:
        captured = safety_capture(catalog, run.ca)
        run.ca.preconnect(_readbacks(to_write), run.timeout)  # while the snapshot is stored
        run.clock.lap("capture")
    unreadable = safety_store(
        restore=run.restore, catalog=catalog, captured=captured, items=to_write
    )
    run.clock.lap("safety_snapshot")
    if not unreadable:
        return to_write
    run.recorder.submit(
        outcomes_write,
        run.restore.pk,
        [
            Result(
                item=i,
                outcome=Outcome.TIMED_OUT,
                error="not written: its current value could not be read for the "
                "safety snapshot (IOC not answering?)",
            )
            for i in to_write
            if i.id in unreadable
        ],
    )
    return [i for i in to_write if i.id not in unreadable]


def _chunk_write_phase(run: _Run, chunk: list[Item], *, attempted: int, timeout: float) -> int:
    """Note the chunk as attempted, write (waiting up to ``timeout`` for completion) and
    verify it, and record its outcomes; how many failed."""
    _note_attempt(run.restore, through=chunk[-1].id, attempted=attempted)
    results = verify_chunk(
        ca=run.ca, items=chunk, timeout=timeout, settle=settle_time(), clock=run.clock
    )
    run.recorder.submit(outcomes_write, run.restore.pk, results)  # while the next chunk goes out
    run.clock.lap("record")
    return sum(r.outcome in FAILED_OUTCOMES for r in results)


def _finish_phase(run: _Run) -> Restore:
    """Counts and timings onto the Restore row, completed, and its claims released (unless
    the reaper failed it meanwhile), once every record is written."""
    run.recorder.drain()
    run.clock.lap("record_wait")
    with transaction.atomic():
        locked = Restore.objects.select_for_update().get(pk=run.restore.pk)
        if locked.status != Restore.Status.RUNNING:
            raise RestoreAborted(f"Restore {run.restore.pk} is no longer running")
        summary_store(locked, run.times)
        run.clock.lap("record")
        locked.timings = run.clock.laps
        locked.status = Restore.Status.COMPLETED
        locked.finished_at = timezone.now()
        locked.save()
        claims_release(locked.pk)
        restore_finish_record(locked)
    return locked
